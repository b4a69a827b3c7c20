"""One module per backend kind: build the upstream request and read its answer (pure)."""

from sidecar.backends.base import BackendAdapter
from sidecar.settings import Backend


def adapter_for(backend: Backend) -> BackendAdapter:
    match backend.settings.kind:
        case "openai":
            from sidecar.backends.openai import OpenAIBackend

            return OpenAIBackend(backend)
        case "azure":
            from sidecar.backends.azure import AzureBackend

            return AzureBackend(backend)
        case "anthropic":
            from sidecar.backends.anthropic import AnthropicBackend

            return AnthropicBackend(backend)
        case "bedrock":
            from sidecar.backends.bedrock import BedrockBackend

            return BedrockBackend(backend)
