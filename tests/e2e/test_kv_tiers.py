"""Tiered KV cache end to end (issue #6, docs/kv-tiers.md), on the CPU backend.

A multi-turn workload over many long, distinct prefixes (each conversation's turn t sends its
system prompt and t user messages, as token ids) runs once on a server whose device tier holds
everything and once on a server with a device tier of 48 blocks, a small host tier and an SSD
tier. The completions must be token-identical, while /metrics shows that blocks really went
device -> host -> SSD and came back SSD -> host -> device, with prefix hits served from the
host and from the SSD. Then the tiered server restarts with --kv-disk-persist on the same
directory and a returning conversation gets its prefix from the SSD, while a server of another
model on that directory starts with an empty SSD tier. Faults on the real files: flipped bytes,
deleted and truncated slab files, and a full small filesystem (a tmpfs in a user + mount
namespace) never change a token, are counted, and leave the server up.
"""

import random
import re
import signal
import subprocess

import pytest
import requests

from conftest import BINARY, MODEL_NAME, Server, free_port, metric, wait_until_ok

CONVERSATIONS = 8
TURNS = 3
SYSTEM_TOKENS = 200  # 12.5 blocks per conversation before any turn
USER_TOKENS = 24
MAX_TOKENS = 6
KV_BLOCK_BYTES = 30 * 2 * 16 * 3 * 64 * 2  # SmolLM2-135M: layers x (K,V) x tokens x heads x dim x f16


def conversations():
    rng = random.Random(6)
    convs = []
    for _ in range(CONVERSATIONS):
        system = [rng.randrange(1000, 20000) for _ in range(SYSTEM_TOKENS)]
        users = [[rng.randrange(1000, 20000) for _ in range(USER_TOKENS)] for _ in range(TURNS)]
        convs.append((system, users))
    return convs


def prompt_of(conv, turn):
    system, users = conv
    prompt = list(system)
    for u in users[: turn + 1]:
        prompt += u
    return prompt


def complete(server, prompt):
    r = requests.post(server.url + "/v1/completions", timeout=120, json={
        "model": MODEL_NAME, "prompt": prompt, "max_tokens": MAX_TOKENS, "temperature": 0,
        "logprobs": 0})
    assert r.status_code == 200, r.text
    choice = r.json()["choices"][0]
    return choice["text"], r.json()["usage"]


def run_workload(server):
    """Turn by turn, round robin over the conversations: each returns after the others ran."""
    convs = conversations()
    return [[complete(server, prompt_of(c, t))[0] for c in convs] for t in range(TURNS)]


def fill_ssd(server, disk_dir, reference):
    """Runs every turn but the last (checking the outputs) until the SSD tier holds blocks;
    returns its slab files."""
    for t in range(TURNS - 1):
        assert [complete(server, prompt_of(c, t))[0] for c in conversations()] == reference[t]
    assert metric(server, "spillway_kv_blocks", tier="disk", state="used") > 0
    slabs = sorted(disk_dir.glob("slab-*"))
    assert slabs
    return slabs


def tiered_args(disk_dir):
    return ("--kv-device-blocks", "48", "--kv-host-bytes", str(64 * KV_BLOCK_BYTES),
            "--kv-disk-path", str(disk_dir), "--kv-disk-bytes", "256MiB", "--kv-disk-persist")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("kv_reference"))
    try:
        yield run_workload(s)
    finally:
        assert s.stop() == 0, s.log_text()


def test_tiers_give_identical_tokens_and_really_move_blocks(reference, tmp_path_factory):
    disk_dir = tmp_path_factory.mktemp("kv_disk")
    s = Server(tmp_path_factory.mktemp("kv_tiered"), *tiered_args(disk_dir))
    try:
        assert run_workload(s) == reference
        for frm, to in (("device", "host"), ("host", "disk")):
            assert metric(s, "spillway_kv_spill_blocks_total", **{"from": frm, "to": to}) > 0, \
                (frm, to)
            assert metric(s, "spillway_kv_bytes_moved_total", **{"from": frm, "to": to}) > 0
        for frm, to in (("disk", "host"), ("host", "device")):
            assert metric(s, "spillway_kv_load_blocks_total", **{"from": frm, "to": to}) > 0, \
                (frm, to)
        assert metric(s, "spillway_prefix_cache_hits_total", tier="host") > 0
        assert metric(s, "spillway_prefix_cache_hits_total", tier="disk") > 0
        assert metric(s, "spillway_kv_load_seconds_count") > 0
        assert metric(s, "spillway_kv_usage_ratio", tier="host") > 0
        assert metric(s, "spillway_kv_blocks", tier="disk", state="used") > 0
        assert metric(s, "spillway_kv_tier_errors_total") == 0
        # Copies in flight (a gauge per direction) and the engine thread's waits on them: each
        # wait was for one of the device<->host copies counted above.
        text = requests.get(s.url + "/metrics", timeout=10).text
        for frm, to in (("device", "host"), ("host", "device")):
            assert f'spillway_kv_copies_in_flight{{from="{frm}",model=' in text, (frm, to)
        copies = metric(s, "spillway_kv_spill_blocks_total", **{"from": "device", "to": "host"}) \
            + metric(s, "spillway_kv_load_blocks_total", **{"from": "host", "to": "device"})
        assert 0 <= metric(s, "spillway_kv_copies_in_flight") <= copies
        assert "spillway_kv_copy_waits_total{" in text
        assert 0 <= metric(s, "spillway_kv_copy_waits_total") <= copies
        # The device tier's series keep their names and meaning.
        total = metric(s, "spillway_kv_blocks", tier="device", state="free") + \
            metric(s, "spillway_kv_blocks", tier="device", state="used")
        assert total == 48
    finally:
        assert s.stop() == 0, s.log_text()

    # Restart on the same SSD directory: a returning conversation's prefix comes from the SSD.
    s = Server(tmp_path_factory.mktemp("kv_restarted"), *tiered_args(disk_dir))
    try:
        assert metric(s, "spillway_kv_blocks", tier="disk", state="used") > 0  # reloaded
        text, usage = complete(s, prompt_of(conversations()[0], TURNS - 1))
        assert text == reference[TURNS - 1][0]
        assert metric(s, "spillway_prefix_cache_hits_total", tier="disk") >= 12 * 16
        assert usage["prompt_tokens_details"]["cached_tokens"] >= 12 * 16
    finally:
        assert s.stop() == 0, s.log_text()

    # Another model on the same directory: the fingerprint differs, the old index is discarded.
    tiny = tmp_path_factory.mktemp("kv_tiny") / "tiny.gguf"
    subprocess.run([str(BINARY), "make-model", "--shape", "tiny", "--random", "--seed", "1",
                    "--out", str(tiny)], check=True, capture_output=True)
    port = free_port()
    proc = subprocess.Popen([str(BINARY), "serve", "--model", str(tiny), "--host", "127.0.0.1",
                             "--port", str(port), "--grpc-port", "0", "--threads", "2",
                             *tiered_args(disk_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        metrics = f"http://127.0.0.1:{port}/metrics"
        wait_until_ok(proc, metrics, lambda: proc.stdout.read().decode() if proc.poll() is not None
                      else "(still running)")
        text = requests.get(metrics, timeout=10).text
        used = re.search(r'spillway_kv_blocks\{[^}]*state="used"[^}]*tier="disk"[^}]*\}\s+(\S+)',
                         text)
        assert used is not None and float(used.group(1)) == 0, text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_corrupt_ssd_blocks_are_misses_not_wrong_tokens(reference, tmp_path_factory):
    """Bytes flipped in the SSD tier's slab file under a running server: the blocks fail their
    checksum, are counted as disk errors and recomputed; every completion is still the
    reference's and the server stays up."""
    disk_dir = tmp_path_factory.mktemp("kv_disk_corrupt")
    s = Server(tmp_path_factory.mktemp("kv_corrupt"), *tiered_args(disk_dir))
    try:
        convs = conversations()
        for slab in fill_ssd(s, disk_dir, reference):
            with open(slab, "r+b") as f:
                size = f.seek(0, 2)
                for offset in range(2048, size, 16384):  # inside every 360 KiB block
                    f.seek(offset)
                    b = f.read(1)
                    f.seek(offset)
                    f.write(bytes([b[0] ^ 0xFF]))
        assert [complete(s, prompt_of(c, TURNS - 1))[0] for c in convs] == reference[TURNS - 1]
        assert metric(s, "spillway_kv_tier_errors_total", tier="disk") > 0
        assert s.health()["status"] == "ok"
    finally:
        assert s.stop() == 0, s.log_text()


def test_deleted_or_truncated_slab_files_are_misses_not_wrong_tokens(reference, tmp_path_factory):
    """The SSD tier's slab files removed under a running server. A deleted file is still open in
    the server (its slots stay readable through the descriptor, so nothing is lost until a
    restart): completions stay the reference's with no error. A restart with --kv-disk-persist
    then finds the index naming a file that is gone, drops those entries and recomputes. A slab
    file truncated to nothing under the running server makes every read of it a miss (a short
    read, or a zero header where a later spill re-extended the file) counted in
    spillway_kv_tier_errors_total, recomputed, with unchanged outputs."""
    disk_dir = tmp_path_factory.mktemp("kv_disk_deleted")
    convs = conversations()
    s = Server(tmp_path_factory.mktemp("kv_deleted"), *tiered_args(disk_dir))
    try:
        for slab in fill_ssd(s, disk_dir, reference):
            slab.unlink()
        disk_hits = metric(s, "spillway_prefix_cache_hits_total", tier="disk")
        assert [complete(s, prompt_of(c, TURNS - 1))[0] for c in convs] == reference[TURNS - 1]
        assert metric(s, "spillway_prefix_cache_hits_total", tier="disk") > disk_hits
        assert metric(s, "spillway_kv_tier_errors_total") == 0
        assert s.health()["status"] == "ok"
    finally:
        assert s.stop() == 0, s.log_text()

    # Restart: the saved index names slots of files that are gone; they are dropped at start-up,
    # never read as data, and the conversations are recomputed.
    s = Server(tmp_path_factory.mktemp("kv_deleted_restarted"), *tiered_args(disk_dir))
    try:
        assert metric(s, "spillway_kv_blocks", tier="disk", state="used") == 0
        slabs = fill_ssd(s, disk_dir, reference)
        assert s.health()["status"] == "ok"

        # Truncate every slab file under the running server: its blocks read short.
        for slab in slabs:
            with open(slab, "r+b") as f:
                f.truncate(0)
        assert [complete(s, prompt_of(c, TURNS - 1))[0] for c in convs] == reference[TURNS - 1]
        # Spills still being written when the files were cut re-extend them (zeros up to the
        # new write), so a read may find a zero header instead of the end of the file: every
        # such read is a miss of one of these kinds, never a hit.
        read_errors = {k: metric(s, "spillway_kv_tier_errors_total", tier="disk", kind=k)
                       for k in ("short_read", "header", "checksum")}
        assert sum(read_errors.values()) > 0, (
            read_errors, metric(s, "spillway_kv_load_blocks_total", **{"from": "disk"}))
        assert s.health()["status"] == "ok"
    finally:
        assert s.stop() == 0, s.log_text()


def unshare_tmpfs_works(mountpoint):
    """True where an unprivileged user + mount namespace can mount a tmpfs (as the DiskTier
    unit test's full-filesystem case needs)."""
    try:
        r = subprocess.run(["unshare", "-Urm", "sh", "-c",
                            f"mount -t tmpfs -o size=1m tmpfs '{mountpoint}'"],
                           capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


def test_full_small_filesystem_degrades_the_ssd_tier(reference, tmp_path_factory, monkeypatch):
    """The SSD tier on a 4 MiB tmpfs (mounted in a private user + mount namespace around the
    server): the filesystem is full for a 256 MiB tier, the first write that would grow a slab
    file finds less free space than the tier's reserve, and the tier degrades: counted as a
    no_space error, reported in /metrics and /health, and the server goes on with the device and
    host tiers, every completion token-identical to a server without lower tiers."""
    import conftest

    mountpoint = tmp_path_factory.mktemp("kv_tmpfs")
    if not unshare_tmpfs_works(mountpoint):
        pytest.skip("unprivileged user + mount namespaces are not permitted here "
                    "(unshare -Urm + mount -t tmpfs failed)")
    wrapper = tmp_path_factory.mktemp("kv_wrapper") / "spillway-in-tmpfs"
    # unshare and sh exec in place, so SIGTERM from Server.stop() reaches spillway itself.
    wrapper.write_text(
        "#!/bin/sh\n"
        f"exec unshare -Urm sh -c 'mount -t tmpfs -o size=4m tmpfs \"$0\" && exec \"$@\"' "
        f"'{mountpoint}' '{conftest.BINARY}' \"$@\"\n")
    wrapper.chmod(0o755)
    monkeypatch.setattr(conftest, "BINARY", wrapper)
    s = Server(tmp_path_factory.mktemp("kv_full"), "--kv-device-blocks", "48",
               "--kv-host-bytes", str(64 * KV_BLOCK_BYTES), "--kv-disk-path", str(mountpoint),
               "--kv-disk-bytes", "256MiB")
    try:
        assert run_workload(s) == reference
        assert metric(s, "spillway_kv_tier_errors_total", tier="disk", kind="no_space") > 0
        assert metric(s, "spillway_kv_blocks", tier="disk", state="degraded") == 1
        assert metric(s, "spillway_kv_spill_blocks_total", **{"from": "host", "to": "disk"}) == 0
        # The host tier still serves returning conversations.
        assert metric(s, "spillway_prefix_cache_hits_total", tier="host") > 0
        health = s.health()
        assert health["status"] == "ok"
        assert health["kv_tiers"]["disk_degraded"] is True
    finally:
        assert s.stop() == 0, s.log_text()
    # Nothing was written outside the namespace's tmpfs.
    assert list(mountpoint.iterdir()) == []
