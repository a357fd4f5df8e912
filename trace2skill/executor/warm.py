"""Imported by the model path's fork server only (`process.WARM`), never by the driver: the
tokenizer and the analyst's templates are loaded once there, before any worker is forked, so
every worker prepares its first prompt at once instead of loading them first (about 0.3 s of
CPU each, which the first analysis waited for)."""

from ..compress import count_tokens
from ..prompts import load

count_tokens("")  # loads the tokenizer (cached for the process, and for the workers forked from it)
load("system.md", "analyse_failure.md", "analyse_success.md")
