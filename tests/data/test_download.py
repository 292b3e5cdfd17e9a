"""RAVDESS download: resumable HTTP, safe extraction, verification; offline, against a server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import stat
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from loralens.data.download import DownloadError, download_file, download_ravdess, safe_extract

FILES = {f"Actor_{a:02d}/03-01-0{e}-01-01-01-{a:02d}.wav": bytes([a, e]) * (5000 + 100 * a + e)
         for a in (1, 2) for e in (1, 2, 3)}


def make_zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def hash_list(path: Path, files: dict[str, bytes]) -> Path:
    path.write_text("".join(f"{k}\t{hashlib.sha256(v).hexdigest()}\t{len(v)}\n" for k, v in files.items()))
    return path


class Server:
    """Serves `content[path]` on 127.0.0.1 with Range support; `cut_next` truncates the next response."""

    def __init__(self) -> None:
        self.content: dict[str, bytes] = {}
        self.ranges: list[str | None] = []
        self.cut_next: int | None = None
        self.honour_range = True
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server API)
                path = self.path.split("?")[0]
                server.ranges.append(self.headers.get("Range"))
                if path not in server.content:
                    self.send_error(404)
                    return
                data = server.content[path]
                start = 0
                rng = self.headers.get("Range")
                if rng and server.honour_range:
                    start = int(rng.removeprefix("bytes=").rstrip("-"))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if server.cut_next is not None:
                    body, server.cut_next = body[: server.cut_next], None
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "*")
    with Server() as s:
        yield s


def test_interrupted_download_resumes_with_range(server, tmp_path):
    data = bytes(range(256)) * 4096  # 1 MiB
    server.content["/f.bin"] = data
    target = tmp_path / "f.bin"
    server.cut_next = 300_000
    with pytest.raises(DownloadError, match="stopped at 300000 of 1048576 bytes") as e:
        download_file(server.url + "/f.bin?download=1", target, progress=False)
    assert "resume" in str(e.value)
    assert not target.exists() and (tmp_path / "f.bin.part").stat().st_size == 300_000
    download_file(server.url + "/f.bin?download=1", target, progress=False)
    assert target.read_bytes() == data and not (tmp_path / "f.bin.part").exists()
    assert server.ranges == [None, "bytes=300000-"]


def test_complete_part_and_server_without_range(server, tmp_path):
    data = b"x" * 5000
    server.content["/f"] = data
    (tmp_path / "a.part").write_bytes(data)  # already whole: server answers 416
    download_file(server.url + "/f", tmp_path / "a", progress=False)
    assert (tmp_path / "a").read_bytes() == data
    server.honour_range = False  # a 200 answer to a Range request restarts the file
    (tmp_path / "b.part").write_bytes(b"garbage")
    download_file(server.url + "/f", tmp_path / "b", progress=False)
    assert (tmp_path / "b").read_bytes() == data
    with pytest.raises(DownloadError, match="HTTP 404"):
        download_file(server.url + "/missing", tmp_path / "c", progress=False)
    with pytest.raises(DownloadError, match="only http"):
        download_file("ftp://127.0.0.1/x", tmp_path / "d", progress=False)


def test_download_ravdess_end_to_end(server, tmp_path):
    server.content["/Audio_Speech_Actors_01-24.zip"] = make_zip(FILES)
    hashes = hash_list(tmp_path / "h.tsv", FILES)
    dest = tmp_path / "ravdess"
    server.cut_next = 20_000
    with pytest.raises(DownloadError, match="stopped at 20000"):
        download_ravdess(dest, url=server.url + "/Audio_Speech_Actors_01-24.zip?download=1", hashes=hashes,
                         progress=False)
    report = download_ravdess(dest, url=server.url + "/Audio_Speech_Actors_01-24.zip?download=1", hashes=hashes,
                              progress=False)
    assert report.passed and len(report.ok) == 6
    assert server.ranges == [None, "bytes=20000-"]
    for rel, data in FILES.items():
        assert (dest / rel).read_bytes() == data
    assert not list(dest.glob("*.zip*"))  # archive and .part removed after a passing check
    # second run: already verified, nothing fetched
    assert download_ravdess(dest, url=server.url + "/gone.zip", hashes=hashes, progress=False).passed
    assert len(server.ranges) == 2


def test_download_ravdess_fails_on_hash_mismatch(server, tmp_path):
    bad = dict(FILES)
    name = next(iter(bad))
    bad[name] = bytes([9]) * len(bad[name])  # same size, other content
    server.content["/a.zip"] = make_zip(bad)
    hashes = hash_list(tmp_path / "h.tsv", FILES)
    with pytest.raises(DownloadError, match=f"hash mismatch: 1\n  {name}"):
        download_ravdess(tmp_path / "d", url=server.url + "/a.zip", hashes=hashes, progress=False)
    assert (tmp_path / "d" / "Audio_Speech_Actors_01-24.zip").exists()  # kept for inspection


def test_local_archive_option(tmp_path):
    zpath = tmp_path / "a.zip"
    zpath.write_bytes(make_zip(FILES))
    report = download_ravdess(tmp_path / "d", archive=zpath, hashes=hash_list(tmp_path / "h.tsv", FILES),
                              progress=False)
    assert report.passed and zpath.exists()


@pytest.mark.parametrize(
    "members,symlinks,reason",
    [
        ({"Actor_01/ok.wav": b"1", "../evil": b"x"}, None, r"'../evil' \(path goes up"),
        ({"Actor_01/../../evil": b"x"}, None, "path goes up"),
        ({"/etc/evil": b"x"}, None, "absolute path"),
        ({"C:/evil": b"x"}, None, "absolute path"),
        ({"Actor_01/ok.wav": b"1"}, {"Actor_01/link": "/etc/passwd"}, "symbolic link"),
    ],
)
def test_malicious_archives_are_rejected(tmp_path, members, symlinks, reason):
    zpath = tmp_path / "evil.zip"
    zpath.write_bytes(make_zip(members, symlinks))
    dest = tmp_path / "out"
    with pytest.raises(DownloadError, match=reason):
        safe_extract(zpath, dest)
    assert not (tmp_path / "evil").exists() and not dest.exists()  # nothing written at all


def test_malicious_archive_from_server_is_rejected(server, tmp_path):
    server.content["/evil.zip"] = make_zip({"Actor_01/a.wav": b"a", "../evil": b"pwned"})
    with pytest.raises(DownloadError, match="refusing to extract member '../evil'"):
        download_ravdess(tmp_path / "d", url=server.url + "/evil.zip",
                         hashes=hash_list(tmp_path / "h.tsv", FILES), progress=False)
    assert not (tmp_path / "evil").exists()


def test_safe_extract_skips_macos_metadata_and_rejects_damaged(tmp_path):
    zpath = tmp_path / "a.zip"
    zpath.write_bytes(make_zip({"Actor_01/a.wav": b"a", "__MACOSX/Actor_01/._a.wav": b"meta"}))
    assert safe_extract(zpath, tmp_path / "out") == ["Actor_01/a.wav"]
    assert not (tmp_path / "out" / "__MACOSX").exists()
    zpath.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DownloadError, match="not a readable zip"):
        safe_extract(zpath, tmp_path / "out2")
