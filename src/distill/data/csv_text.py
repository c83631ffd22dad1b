"""The text of a CSV file, refused with a clear message when it is not text at all."""

from __future__ import annotations

from pathlib import Path

from distill.errors import DataError

_EXPECTED = "expected a header row and comma-separated numeric columns"


def read_csv_text(path: Path) -> str:
    """``path``'s contents as UTF-8 text (a leading byte-order mark dropped); a binary file —
    bytes that are not UTF-8, or NUL bytes — is a :class:`DataError` naming the file."""
    try:
        text = Path(path).read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as error:
        reason = f"byte {error.start} is not UTF-8; a binary file?"
        raise DataError(f"{path}: not a UTF-8 text CSV file ({reason}); {_EXPECTED}") from None
    if "\x00" in text:
        raise DataError(
            f"{path}: not a UTF-8 text CSV file (it contains NUL bytes; a binary file?); {_EXPECTED}"
        )
    return text
