"""`aosa serve`: a read-only results browser over a result store (Starlette, served by uvicorn).

Pages: Runs (one line per run), Run (the paper's tables with 95% intervals, a paired difference of two methods,
mean deletion and insertion curves, stage timings, failed units by error kind), Videos (a paginated gallery that
DuckDB sorts and filters), Video (every method's map over the frames the model saw, on one timeline, beside a second
run if asked), SQL (`aosa query`'s sandbox and limits). Templates and static files ship inside the package.
"""
