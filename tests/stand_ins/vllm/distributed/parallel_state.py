"""The stand-in's teardown functions (``VLLMSampler.close`` calls them)."""

from vllm import log


def destroy_model_parallel() -> None:
    log("close")


def destroy_distributed_environment() -> None:
    pass
