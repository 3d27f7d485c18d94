"""A repository with `<TEST_MODEL>_pipeline` (py FP32 classifier, max batch 8) and a server on it."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest

from tests.conftest import TEST_MAX_BATCH, TEST_MODEL, _need_tritonserver

PIPELINE = f"{TEST_MODEL}_pipeline"
PREPROCESS = f"{TEST_MODEL}_preprocess"
CLASSIFIER = f"{TEST_MODEL}_py_fp32"


@pytest.fixture(scope="session")
def pipeline_repo(tmp_path_factory) -> Path:
    from repo_gen.build import build
    from repo_gen.config import BuildConfig

    out = tmp_path_factory.mktemp("pipeline") / "model_repository"
    build(BuildConfig(model=TEST_MODEL, output=out, max_batch=TEST_MAX_BATCH, precisions=("fp32",),
                      runtimes=("py",), pipeline=True))
    return out


@pytest.fixture(scope="session")
def pipeline_server(pipeline_repo):
    _need_tritonserver()
    from repo_gen.triton.server import TritonServer, free_ports

    server = TritonServer(pipeline_repo, ports=free_ports(), exit_on_error=False)
    server.start(timeout_s=180)
    yield server
    server.stop()


def encode(img, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="session")
def photo_files() -> list[tuple[str, bytes]]:
    """scikit-image's real photos as files in every decoder and colour mode the pipeline claims."""
    from repo_gen.data.images import skimage_photos

    photos = dict(skimage_photos())
    files = []
    for i, (name, img) in enumerate(sorted(photos.items())):
        fmt = ("JPEG", "PNG", "WEBP", "BMP")[i % 4]
        files.append((f"{name}.{fmt.lower()}", encode(img, fmt)))
    cat, astro = photos["chelsea"], photos["astronaut"]
    files += [
        ("chelsea-gray.png", encode(cat.convert("L"), "PNG")),
        ("chelsea-rgba.png", encode(cat.convert("RGBA"), "PNG")),
        ("chelsea-palette.png", encode(cat.convert("P"), "PNG")),
        ("astronaut-cmyk.jpg", encode(astro.convert("CMYK"), "JPEG")),
        ("astronaut-rgba.webp", encode(astro.convert("RGBA"), "WEBP", lossless=True)),
    ]
    return files


def huge_png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of width x height, written row by row (never held decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(6)
    row = b"\x00" * (width + 1)  # filter byte + pixels
    idat = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="session")
def huge_jpeg() -> bytes:
    """A 10,000 x 10,000 grayscale JPEG (built from a 100 MB image once; about 1 MB encoded)."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (10_000, 10_000), 90)
    ImageDraw.Draw(img).ellipse((2_000, 1_000, 8_000, 9_000), fill=200)
    data = encode(img, "JPEG", quality=80)
    del img
    return data
