"""Ray orchestration for fusion-orchestrator: the only package that imports ray."""
