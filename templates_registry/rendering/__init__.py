"""Rendering: MJML compiled once per version, then sandboxed Jinja per recipient."""

from templates_registry.rendering.errors import RenderError, RenderLimitError
from templates_registry.rendering.pipeline import (
    CompiledVersion,
    RenderedMessage,
    VersionContent,
    compile_cache,
    compile_version,
    render_direct,
    validate_content,
)

__all__ = [
    "CompiledVersion",
    "RenderError",
    "RenderLimitError",
    "RenderedMessage",
    "VersionContent",
    "compile_cache",
    "compile_version",
    "render_direct",
    "validate_content",
]
