"""The bundled clean reference submission (filled in by a later issue)."""
