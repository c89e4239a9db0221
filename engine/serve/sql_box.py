"""The SQL page: a query box run through exactly `aosa query`'s sandbox and limits (engine.store.query.run_query in
a child process, the server's --timeout, --max-rows, --max-bytes, --memory-limit and --threads), answered as tables,
and the same query as a CSV download rendered by `aosa query --format csv`'s renderer."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from aosa.engine.serve.pages import render
from aosa.engine.serve.params import store_of
from aosa.engine.store.query import run_query
from aosa.engine.store.sql import QueryError

SHOWN_ROWS = 1_000  # rows of each answer shown on the page; the CSV holds them all
EXAMPLE = "SELECT method, count(*) AS maps, avg(overall) AS overall FROM metrics WHERE status = 'ok' GROUP BY method"


async def _sql(request: Request) -> str:
    form = await request.form()
    return str(form.get("sql", "")).strip()


async def sql_page(request: Request) -> Response:
    """GET: the empty box. POST: the statements' answers, or the sandbox's one-line refusal (status 400)."""
    sql = await _sql(request) if request.method == "POST" else ""
    answers, error = [], None
    if sql:
        try:
            answers = await run_in_threadpool(run_query, store_of(request), sql, request.app.state.limits)
        except QueryError as exc:
            error = str(exc)
    return render(request, "sql.html", sql=sql or EXAMPLE, answers=answers, error=error, shown=SHOWN_ROWS,
                  status_code=400 if error else 200)


async def sql_csv(request: Request) -> Response:
    """The answer of the box's query as a CSV file (the last statement's, as one table)."""
    sql = await _sql(request)
    try:
        answers = await run_in_threadpool(run_query, store_of(request), sql, request.app.state.limits,
                                          request.app.state.csv)
    except QueryError as exc:
        return render(request, "sql.html", sql=sql, answers=[], error=str(exc), shown=SHOWN_ROWS, status_code=400)
    return Response(answers[-1] + "\n", media_type="text/csv",
                    headers={"Content-Disposition": 'attachment; filename="query.csv"'})
