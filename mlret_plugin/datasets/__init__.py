"""LAReQA datasets (XQuAD-R, MLQA-R) for ir_datasets."""


def register() -> None:
    """Register every dataset id with ir_datasets (idempotent)."""
