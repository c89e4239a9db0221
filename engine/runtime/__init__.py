"""Running explanations: one video in-process (explain), and whole manifests on Ray actors (evaluation)."""
