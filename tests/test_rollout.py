"""The incremental rollout reader against the recorded Codex 0.169.0 rollout."""
from __future__ import annotations

import json

from spool.rollout import RolloutState, read_incremental

from support.recorded import fixture_rollout


TURN1 = "01a20038-88e8-7592-844d-9a4c2114b9d0"
TURN2 = "01a20038-a3f6-7272-b707-136584472438"


def _truth(data: bytes) -> dict:
    turn, per_turn, final = None, {}, None
    for line in data.decode().splitlines():
        obj = json.loads(line)
        p = obj["payload"]
        if obj["type"] == "turn_context":
            turn = p["turn_id"]
        if obj["type"] == "event_msg" and p.get("type") == "token_count" and p.get("info"):
            last = p["info"]["last_token_usage"]
            acc = per_turn.setdefault(turn, [0, 0, 0])
            acc[0] += last["input_tokens"]
            acc[1] += last["output_tokens"]
            acc[2] += 1
            final = p["info"]["total_token_usage"]
    return {"turns": per_turn, "final": final}


def test_whole_fixture():
    path = fixture_rollout()
    st = read_incremental(path)
    data = path.read_bytes()
    assert st.offset == len(data) and st.lines == data.count(b"\n")
    assert st.meta["cli_version"] == "0.169.0"
    assert (st.git_branch, st.git_commit) == ("master", "bdc220319710aa2b135e7d40f22507f862f1a026")
    assert st.meta["source"] == "exec"
    assert st.models == {TURN1: "gpt-fake", TURN2: "gpt-fake"}
    assert set(st.commands) == {"call_fake_1", "call_fake_3"}
    c1 = st.commands["call_fake_1"]
    assert (c1["exit_code"], c1["status"], c1["command"], c1["turn_id"]) == (
        0, "completed", "echo hello", TURN1)
    assert c1["duration_ms"] == 0.008
    truth = _truth(data)
    for tid in (TURN1, TURN2):
        u = st.turns[tid]
        assert [u["input"], u["output"], u["requests"]] == truth["turns"][tid]
    assert st.total == truth["final"]
    facts = st.facts()
    assert facts.total_usage["total"] == truth["final"]["total_tokens"]
    assert facts.commands["call_fake_3"].exit_code == 0


def test_incremental_reads_only_new_complete_lines(tmp_path):
    data = fixture_rollout().read_bytes()
    path = tmp_path / "r.jsonl"
    path.write_bytes(b"")
    st = RolloutState()
    lines_seen = 0
    # Append in odd-sized pieces (cutting lines in the middle), reading after each.
    cuts = list(range(0, len(data), 977)) + [len(data)]
    for a, b in zip(cuts, cuts[1:]):
        with path.open("ab") as fh:
            fh.write(data[a:b])
        before = st.offset
        st = read_incremental(path, st)
        assert st.offset >= before
        assert data[:st.offset].endswith(b"\n") or st.offset == 0  # complete lines only
        lines_seen = st.lines
    whole = read_incremental(fixture_rollout())
    assert lines_seen == data.count(b"\n")  # every line fed exactly once
    assert (st.turns, st.commands, st.total, st.meta) == (
        whole.turns, whole.commands, whole.total, whole.meta)
    # Nothing new: nothing read.
    again = read_incremental(path, st)
    assert again.lines == st.lines and again.offset == st.offset


def test_persisted_state_round_trips_and_resumes(tmp_path):
    data = fixture_rollout().read_bytes()
    half = data.index(b"\n", len(data) // 2) + 1
    path = tmp_path / "r.jsonl"
    path.write_bytes(data[:half])
    st = RolloutState.from_json(read_incremental(path).to_json())
    path.write_bytes(data)
    st = read_incremental(path, st)
    assert st.turns == read_incremental(fixture_rollout()).turns


def test_replaced_file_starts_again_and_missing_file_keeps_state(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_bytes(fixture_rollout().read_bytes())
    st = read_incremental(path)
    assert read_incremental(tmp_path / "missing.jsonl", st).turns == st.turns
    assert read_incremental(None, st).offset == st.offset
    first = fixture_rollout().read_bytes().split(b"\n", 1)[0] + b"\n"
    path.write_bytes(first)  # shorter than the offset: a new file
    st2 = read_incremental(path, st)
    assert st2.offset == len(first) and st2.turns == {} and st2.commands == {}
    assert RolloutState.from_json("not json").offset == 0


def test_repeated_null_and_zero_token_counts_are_not_counted(tmp_path):
    def tc(last, total):
        info = None if last is None else {"last_token_usage": last, "total_token_usage": total}
        return json.dumps({"type": "event_msg", "payload": {"type": "token_count", "info": info}})
    u = {"input_tokens": 10, "cached_input_tokens": 2, "output_tokens": 3,
         "reasoning_output_tokens": 1, "total_tokens": 13}
    zero = dict.fromkeys(u, 0)
    t2 = {k: v * 2 for k, v in u.items()}
    lines = [
        json.dumps({"type": "turn_context", "payload": {"turn_id": "T", "model": "m"}}),
        tc(u, u), tc(u, u),  # a repeat: the total did not move
        tc(None, None),
        tc(zero, {**u, "input_tokens": 11}),  # all-zero line after a compaction
        json.dumps({"type": "event_msg", "payload": {"type": "item_completed", "turn_id": "T",
                    "item": {"type": "CommandExecution", "id": "c", "exit_code": 2,
                             "status": "failed", "command": ["/bin/zsh", "-c", "false"]}}}),
        tc(u, t2), "{broken json token_count",
    ]
    path = tmp_path / "r.jsonl"
    path.write_text("\n".join(lines) + "\n")
    st = read_incremental(path)
    assert st.turns["T"]["input"] == 20 and st.turns["T"]["requests"] == 2
    assert st.commands["c"]["exit_code"] == 2 and st.commands["c"]["command"] == "false"
