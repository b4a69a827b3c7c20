"""The llm-sidecar benchmark: `python -m bench` (see bench/README.md)."""
