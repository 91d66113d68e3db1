import io
import json
import sys

from qmoe_tfq.turns import ANSWER, Turns, serve

# A child that answers each word with its name, the word and when it answered; it fails on its second "round" if
# its name is "fails".
CHILD = """
import json, sys, time
name, rounds = sys.argv[1], 0
for word in sys.stdin:
    word = word.strip()
    rounds += word == "round"
    if name == "fails" and rounds == 2:
        print("out of memory", file=sys.stderr)
        sys.exit(3)
    print("a line that is not an answer")
    print("answer: " + json.dumps({"name": name, "word": word, "at": time.monotonic_ns()}), flush=True)
"""


def child(name: str) -> list[str]:
    return [sys.executable, "-c", CHILD, name]


def test_turns_run_round_by_round_led_by_each_child_in_turn():
    with Turns({name: child(name) for name in "abc"}) as turns:
        started = turns.start("build")
        answers = turns.rounds("round", 3)
    assert [answer["name"] for answer in sorted(started.values(), key=lambda a: a["at"])] == ["a", "b", "c"]
    assert {name: [a["word"] for a in mine] for name, mine in answers.items()} == {n: ["round"] * 3 for n in "abc"}
    order = [a["name"] for a in sorted((a for mine in answers.values() for a in mine), key=lambda a: a["at"])]
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert turns.failed == {}


def test_a_child_that_ends_is_left_out_with_its_last_stderr_line():
    with Turns({name: child(name) for name in ("a", "fails", "c")}) as turns:
        turns.start("build")
        answers = turns.rounds("round", 3)
        assert list(turns.children) == ["a", "c"]
    assert [len(answers[name]) for name in ("a", "fails", "c")] == [3, 1, 3]
    assert turns.failed == {"fails": "exit code 3: ['out of memory']"}


def test_serve_answers_each_word_with_its_handler(monkeypatch, capsys):
    monkeypatch.setattr(sys, "stdin", io.StringIO("start\nround\nround\n"))
    calls = iter(range(10))
    serve({"start": lambda: {"first_step": 1.5}, "round": lambda: {"train": next(calls)}})
    lines = capsys.readouterr().out.splitlines()
    assert all(line.startswith(ANSWER) for line in lines)
    assert [json.loads(line[len(ANSWER):]) for line in lines] == [{"first_step": 1.5}, {"train": 0}, {"train": 1}]
