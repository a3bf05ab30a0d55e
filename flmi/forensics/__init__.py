"""Federation forensics: record and replay rounds, inspect updates, score contributions.

Everything here works from ``RUN_DIR/record`` (written under ``[record]
updates = true``): the global model and every site's update of every round,
content-addressed safetensors files and one JSON manifest per round. Nothing
here trains; replaying a round runs the strategy's own ``aggregate`` on what
was recorded.
"""
