"""The skill format: the only code that parses and renders SKILL.md and its companions.

- `markers`: the rule marker, the lock marker and the version key, and readers of rule bullets.
- `sections`: the Markdown section tree (renders back byte for byte) and typed edits on it.
- `frontmatter`: splitting, reading (strictyaml, the project's one YAML library) and editing
  the frontmatter, and the version value in it.
- `versions`: semantic versions, the next version of a build, changelog entries.

`author` renders with it, `skill` validates with it, `publish` merges and rolls back with it.
"""
