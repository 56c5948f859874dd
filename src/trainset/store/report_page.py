"""A static HTML report: one page plus a folder of its images, published atomically.

```
{dir}/{stem}.html               the page: relative links only, inline CSS, no script
{dir}/{stem}_files-{token}/     its images; a new token (random) for every report written
```

It opens from disk in any browser (no server, no JavaScript). While the report is built its
images are streamed into a staging folder ``.{stem}_files.tmp-XXXX`` beside the page (one image
in memory at a time, each fsynced); :meth:`ReportPage.publish` renames that folder to its final
name, writes the page atomically, and only then removes the image folders of earlier reports.
A process killed at any moment leaves the old page with its complete folder or the new page
with its complete folder. Writers of one page are serialised by a lock file
``.{stem}.lock`` beside it, so a staging folder found while holding the lock was left by a
killed writer and is removed.
"""

from __future__ import annotations

import html
import io
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from trainset.errors import InputError
from trainset.store.atomic import TEMP_MARKER, atomic_write_text
from trainset.store.locks import exclusive_lock

# Largest thumbnail (width, height) in pixels: frames keep their aspect ratio inside it.
THUMB_BOX = (144, 108)
JPEG_QUALITY = 85

_CSS = f"""
body{{font:14px/1.4 system-ui,sans-serif;margin:0;padding:1em 2em;color:#222}}
.scroll{{overflow-x:auto}}summary{{cursor:pointer}}
h1{{margin:.2em 0}}h2{{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}}
table{{border-collapse:collapse;margin:.5em 0}}td,th{{border:1px solid #ddd;padding:3px 7px;
text-align:left;vertical-align:top}}th{{background:#f4f4f4}}
.verdict{{font-size:1.3em;font-weight:bold;padding:.5em .8em;border-radius:4px;margin:.6em 0}}
.pass{{background:#dff3df;color:#185c18}}.fail{{background:#fbe1e1;color:#8a1212}}
.note{{background:#fff6d8;color:#5c4500}}
.badge{{display:inline-block;padding:0 .5em;border-radius:3px;font-size:.85em;font-weight:bold}}
.reason{{white-space:pre-wrap;font-family:ui-monospace,monospace;font-size:.9em;margin:.2em 0}}
.strip td,.strip th{{padding:2px;text-align:center;font-size:.85em}}
.strip img{{display:block}}.missing{{color:#8a1212;font-size:.85em;max-width:{THUMB_BOX[0]}px}}
.scale{{height:12px;width:{THUMB_BOX[0]}px;border:1px solid #999}}
.scalelabels{{display:flex;justify-content:space-between;width:{THUMB_BOX[0] + 2}px;font-size:.8em}}
pre{{white-space:pre-wrap;font-size:.9em;background:#f8f8f8;padding:.4em;margin:.2em 0}}
code{{background:#f4f4f4;padding:0 .2em}}
"""


class Html(str):
    """Text that is already HTML: inserted as it is, where plain strings are escaped."""


def esc(value: Any) -> Html:
    """``value`` as HTML text (``Html`` values are kept as they are)."""
    return value if isinstance(value, Html) else Html(html.escape(str(value)))


def tag(name: str, content: Any = "", **attrs: Any) -> Html:
    """``<name attrs>content</name>``; ``cls`` gives ``class``; content is escaped unless Html."""
    text = "".join(
        f' {"class" if k == "cls" else k.replace("_", "-")}="{html.escape(str(v), quote=True)}"'
        for k, v in attrs.items()
        if v is not None
    )
    return Html(f"<{name}{text}>{esc(content)}</{name}>")


def join(parts: Sequence[Any], sep: str = "") -> Html:
    """Concatenate parts, escaping the plain strings among them."""
    return Html(sep.join(esc(p) for p in parts))


def table(headers: Sequence[Any], rows: Sequence[Sequence[Any]], *, cls: str | None = None) -> Html:
    """An HTML table; cells are escaped unless they are :class:`Html`."""
    head = tag("tr", join([tag("th", h) for h in headers])) if headers else Html("")
    body = join([tag("tr", join([tag("td", c) for c in row])) for row in rows])
    return tag("table", join([head, body]), cls=cls)


def key_values(items: Sequence[tuple[Any, Any]]) -> Html:
    """A two-column table: name | value."""
    return tag("table", join([tag("tr", join([tag("th", k), tag("td", v)])) for k, v in items]))


def figure_png(fig: Any) -> bytes:
    """A matplotlib figure as PNG bytes; the figure is closed."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def thumbnail_jpeg(image: np.ndarray, box: tuple[int, int] = THUMB_BOX) -> bytes:
    """(H, W) or (H, W, 3) uint8 image scaled to fit ``box`` (w, h) px, as JPEG bytes."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim not in (2, 3):
        raise InputError(
            "thumbnail needs a uint8 image", expected="(H, W) or (H, W, 3) uint8", found=arr.shape
        )
    img = Image.fromarray(arr)
    img.thumbnail(box, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return buf.getvalue()


class ReportPage:
    """Build a page and its images, then :meth:`publish` them together (see the module doc).

    Use as a context manager: on an exception the staging folder is removed and the previous
    report stays as it was.
    """

    def __init__(self, path: str | os.PathLike[str], title: str) -> None:
        self.path = Path(path)
        if self.path.suffix.lower() not in (".html", ".htm"):
            raise InputError(
                "report page must be an .html file",
                file=self.path,
                expected=".html",
                found=self.path.suffix,
            )
        self.title = title
        self.body: list[str] = []
        self.n_images = 0
        self.image_bytes = 0
        self._stack = ExitStack()
        self._staging: Path | None = None
        self._folder = ""

    @property
    def _prefix(self) -> str:
        return f"{self.path.stem}_files"

    def __enter__(self) -> ReportPage:
        self._stack.enter_context(exclusive_lock(self.path.parent / f".{self.path.stem}.lock"))
        for stale in self.path.parent.glob(f".{self._prefix}{TEMP_MARKER}*"):
            shutil.rmtree(stale, ignore_errors=True)
        self._staging = Path(
            tempfile.mkdtemp(prefix=f".{self._prefix}{TEMP_MARKER}", dir=self.path.parent)
        )
        self._folder = f"{self._prefix}-{self._staging.name.rsplit(TEMP_MARKER, 1)[1]}"
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
        self._stack.close()

    def add_heading(self, heading: str, command: str, note: str = "") -> None:
        """The page's ``<h1>`` and a line saying when and by which command it was written."""
        written = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        self.add(tag("h1", heading))
        self.add(tag("p", f"Written {written} by `{command}`. {note}".rstrip()))

    def add(self, fragment: Any) -> None:
        """Append a fragment to the body (plain strings are escaped)."""
        self.body.append(esc(fragment))

    def image(self, name: str, data: bytes, *, alt: str, title: str | None = None) -> Html:
        """Store image ``name`` (a plain file name, e.g. ``scene_000_t0000_depth.jpg``) and
        return its ``<img>`` tag. Only images encoded by the caller go in: never a broken link."""
        if self._staging is None:
            raise InputError("ReportPage.image outside its `with` block", key=name)
        if not name or name != Path(name).name or name.startswith("."):
            raise InputError("image name must be a plain file name", key="name", found=name)
        with Image.open(io.BytesIO(data)) as probe:
            width, height = probe.size
        target = self._staging / name
        if target.exists():
            raise InputError("image name used twice in one report", key="name", found=name)
        with open(target, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        self.n_images += 1
        self.image_bytes += len(data)
        src = f"{self._folder}/{name}"
        return Html(
            f'<img src="{html.escape(src, quote=True)}" width="{width}" height="{height}" '
            f'alt="{html.escape(alt, quote=True)}"'
            + (f' title="{html.escape(title, quote=True)}"' if title else "")
            + ">"
        )

    def publish(self) -> Path:
        """Move the images to ``{stem}_files-{token}/``, write the page, drop older folders."""
        if self._staging is None:
            raise InputError("ReportPage.publish outside its `with` block", file=self.path)
        os.replace(self._staging, self.path.parent / self._folder)
        self._staging = None
        atomic_write_text(self.path, self._render())
        for old in self.path.parent.glob(f"{self._prefix}-*"):
            if old.is_dir() and old.name != self._folder:
                shutil.rmtree(old, ignore_errors=True)
        return self.path

    def _render(self) -> str:
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{esc(self.title)}</title><style>{_CSS}</style></head>\n<body>\n"
            + "\n".join(self.body)
            + "\n</body></html>\n"
        )

    @property
    def folder(self) -> Path:
        """The image folder of this report (final name; it exists once published)."""
        return self.path.parent / self._folder

    def published_bytes(self) -> int:
        """Size of the published page plus its image folder, in bytes."""
        return self.path.stat().st_size + sum(p.stat().st_size for p in self.folder.iterdir())
