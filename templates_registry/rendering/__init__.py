"""Rendering: MJML compiled once per version, then sandboxed Jinja per recipient."""

from templates_registry.rendering.errors import RenderError, RenderLimitError
from templates_registry.rendering.pipeline import (
    UNSUBSCRIBE_VAR,
    CompiledVersion,
    RenderedMessage,
    VersionContent,
    compile_cache,
    compile_version,
    render_direct,
    sample_unsubscribe_url,
    validate_content,
)

__all__ = [
    "UNSUBSCRIBE_VAR",
    "CompiledVersion",
    "RenderError",
    "RenderLimitError",
    "RenderedMessage",
    "VersionContent",
    "compile_cache",
    "compile_version",
    "render_direct",
    "sample_unsubscribe_url",
    "validate_content",
]
