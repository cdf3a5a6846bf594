"""
The documentation cannot rot: every command README.md and docs/*.md show names only flags that exist
(parsed with the project's own parser), every file, test and section they point at exists, the seed
table is the one report.py makes from docs/results.json, the README stays one short read, and no word
of how the project was made is left in the docs, the code or the scripts.

    python -m pytest -q tests/test_docs.py
"""
import json
import re
import shlex
from dataclasses import fields
from pathlib import Path

import pytest

import ablate
import bench
import report
import sample
import train
from common import parse_config

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

# the dataclass each command parses its --key=value flags into
CONFIGS = {"train.py": train.TrainConfig, "sample.py": sample.SampleConfig, "ablate.py": ablate.AblationConfig,
           "report.py": report.ReportConfig, "bench.py": None}
# bench.py takes a command first (bench.COMMANDS), each with its own dataclass; rl and sft also take every
# train.py flag, split from their own as bench.bench_and_train_configs splits them
BENCH_CONFIGS = {"sample": bench.SampleBench, "logprobs": bench.LogprobsBench, "rewards": bench.RewardsBench,
                 "rl": bench.RLBench, "sft": bench.SFTBench}
BENCH_TAKES_TRAIN_FLAGS = {"rl", "sft"}
SHELL_SEPARATORS = {";", "&", "&&", "|", "||", "do", "then", "else"}

# files a run writes into its out_dir (a page may name them alone); paths under out/ are a run's, not the repo's
RUN_FILES = {"ckpt.pt", "metrics.jsonl", "summary.json", "harder.json",
             "curves.png", "structure.png", "process.png", "deep.png"}
FILE_EXTENSIONS = (".py", ".md", ".png", ".json", ".jsonl", ".sh", ".txt")
REPO_FOLDERS = {"docs", "tests", ".ci"}

# words of how the project was made, not of what it is (a figure is labelled by commit, machine and command)
PROCESS_WORDS = [r"\bsessions? \d", r"\bearlier sessions?\b", r"\b(1st|2nd|3rd|first|second|third) (device )?calls?\b",
                 r"\bdevice calls?\b", r"issue'?s owner", r"\b(measured|tried) in development\b",
                 r"\bduring development\b", r"\bissue \d+"]

FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)
INLINE = re.compile(r"`((?:[^`\n]|\n(?!\n))+)`")  # an inline code span may wrap onto the next line, not past a blank one


def shown_code(text):
    """Each line of code a page shows: a fenced block's lines (a line ending in a backslash joined to the next)
    and each inline code span (its line breaks read as spaces)."""
    lines = []
    for block in FENCE.findall(text):
        lines += block.replace("\\\n", " ").splitlines()
    return lines + [span.replace("\n", " ") for span in INLINE.findall(FENCE.sub("", text))]


def shell_words(line):
    """A line split as the shell splits it (quotes removed, ; & | apart, # to the end a comment)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    try:
        return list(lexer)
    except ValueError:  # an unclosed quote: prose, not a command
        return line.split()


def commands(line):
    """[(script, arguments)] of each `python SCRIPT ...` or `torchrun [its flags] SCRIPT ...` in a line of
    shell: the arguments are the words after the script up to the first that is not a flag (bench.py's
    command word first)."""
    found, segment = [], []
    for word in shell_words(line) + [";"]:
        if word not in SHELL_SEPARATORS:
            segment.append(word)
            continue
        for i, word_i in enumerate(segment):
            script = word_i.removeprefix("./")
            if script in CONFIGS and {"python", "python3", "torchrun"} & set(segment[:i]):
                rest = segment[i + 1:]
                if script == "bench.py" and rest and not rest[0].startswith("-"):
                    head, rest = rest[:1], rest[1:]
                else:
                    head = []
                flags = []
                for arg in rest:
                    if not arg.startswith("-"):
                        break
                    flags.append(arg)
                found.append((script, head + flags))
                break
        segment = []
    return found


def parse_flags(cls, args):
    """args -> a cls, by common.parse_config. A value that is a shell variable (--seed=$s) is not parsed,
    but its key must still be one of cls's fields."""
    names = {f.name for f in fields(cls)}
    for arg in args:
        key, _, value = arg.removeprefix("--").partition("=")
        if "$" in value and key not in names:
            raise ValueError(f"unknown config key {key!r}")
    return parse_config(cls, [arg for arg in args if "$" not in arg.partition("=")[2]])


def check_command(script, args):
    """Parse a shown command's flags as the script does; raises ValueError naming what does not exist."""
    if {"-h", "--help"} & set(args):
        return
    if script != "bench.py":
        cfg = parse_flags(CONFIGS[script], args)
        if script == "ablate.py":  # the flags ablate.py passes on to every train.py run
            parse_flags(train.TrainConfig, cfg.train_args.split())
        return
    command, *args = args or [""]
    if command == "all" and not args:
        return
    if command not in BENCH_CONFIGS:
        raise ValueError(f"bench.py has no command {command!r} (it has {', '.join(bench.COMMANDS)}, all)")
    if command not in BENCH_TAKES_TRAIN_FLAGS:
        parse_flags(BENCH_CONFIGS[command], args)
        return
    own = [arg for arg in args if arg[2:].split("=", 1)[0] in {f.name for f in fields(BENCH_CONFIGS[command])}]
    parse_flags(BENCH_CONFIGS[command], own)
    parse_flags(train.TrainConfig, [arg for arg in args if arg not in own])


def shown_commands():
    """[(page name, line, script, arguments)] of every command README.md and docs/*.md show."""
    return [(page.relative_to(ROOT).as_posix(), line, script, args)
            for page in PAGES for line in shown_code(page.read_text())
            for script, args in commands(line)]


def command_errors(found):
    errors = []
    for page, line, script, args in found:
        try:
            check_command(script, args)
        except ValueError as e:
            errors.append(f"{page}: `{line.strip()}`: {e}")
    return errors


def named_files(page):
    """[(what the page wrote, the path it means)] for each link target and each word of its code that looks
    like a file or folder of the repository (a file name with a known extension, or a path in docs/,
    tests/, .ci/). Not URLs, shell variables, flag values, nor a run's files (out/..., or ckpt.pt alone)."""
    text, named = page.read_text(), []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        path = target.split("#")[0]
        if path and "://" not in path and not path.startswith("mailto:"):
            named.append((target, page.parent / path))
    for line in shown_code(text):
        for word in line.split():
            word = word.split("::")[0].strip("\"'`,;:()[]")
            if ("=" in word or "$" in word or "*" in word or "://" in word or word.startswith(("-", "out/", "out-"))
                    or not re.fullmatch(r"[\w.-]+(/[\w.-]+)*/?", word) or word in RUN_FILES):
                continue
            if word.endswith(FILE_EXTENSIONS) or ("/" in word and word.split("/")[0] in REPO_FOLDERS):
                named.append((word, ROOT / word))
    return named


def slug(heading):
    """The anchor GitHub gives a heading: lower case, only letters, digits, _ and -, spaces as -."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(h) for h in re.findall(r"^#+ (.+)$", FENCE.sub("", page.read_text()), re.M)}


def process_words(path):
    """[(line number, line)] of the lines of a file that say how the project was made."""
    return [(n, line.strip()) for n, line in enumerate(path.read_text().splitlines(), 1)
            if any(re.search(p, line, re.I) for p in PROCESS_WORDS)]

# -----------------------------------------------------------------------------


def test_every_command_the_docs_show_names_only_flags_its_config_has():
    found = shown_commands()
    assert {script for _, _, script, _ in found} == set(CONFIGS)  # the finder sees every script's commands
    assert not command_errors(found)


def test_a_shown_command_with_a_renamed_flag_is_caught():
    page = "`python train.py --rl_step=300`\n```bash\npython bench.py sample --batch=8\n```"
    found = [("page", line, script, args) for line in shown_code(page) for script, args in commands(line)]
    errors = "\n".join(command_errors(found))
    assert "unknown config key 'rl_step'" in errors and "unknown config key 'batch'" in errors


def test_commands_are_read_as_the_shell_reads_them():
    assert commands("torchrun --standalone --nproc_per_node=2 train.py --rl_steps=5") == [("train.py", ["--rl_steps=5"])]
    loop = "for s in 1 2 3; do python train.py --seed=$s --out_dir=out/seed$s; done; python report.py --runs=a,b"
    assert commands(loop) == [("train.py", ["--seed=$s", "--out_dir=out/seed$s"]), ("report.py", ["--runs=a,b"])]
    block = "```bash\npython train.py --numbers=6 \\\n  --n_layer=6   # a comment --not_a_flag=1\n```"
    assert [commands(line) for line in shown_code(block)] == [[("train.py", ["--numbers=6", "--n_layer=6"])]]
    assert commands('python sample.py --prompt="5 4 8 3->11:" --num_samples=1') == [
        ("sample.py", ["--prompt=5 4 8 3->11:", "--num_samples=1"])]
    assert commands("python bench.py rl --ckpt=out/ckpt.pt --fused_update=false") == [
        ("bench.py", ["rl", "--ckpt=out/ckpt.pt", "--fused_update=false"])]
    check_command("bench.py", ["rl", "--ckpt=out/ckpt.pt", "--fused_update=false"])  # a train.py flag: rl takes it
    with pytest.raises(ValueError, match="'seeed'"):
        check_command("train.py", ["--seeed=$s"])  # a shell variable's key is still checked
    with pytest.raises(ValueError, match="'rl_stepz'"):
        check_command("ablate.py", ["--train_args=--task=arithmetic --rl_stepz=3"])  # what ablate.py passes on
    with pytest.raises(ValueError, match="fused_update"):
        check_command("bench.py", ["sample", "--fused_update=false"])  # only rl and sft take train.py's flags


def test_every_flag_shown_alone_is_a_key_of_some_commands_config():
    keys = {"key"} | {f.name for cls in [*filter(None, CONFIGS.values()), *BENCH_CONFIGS.values()] for f in fields(cls)}
    alone = [(page.name, word) for page in PAGES for line in shown_code(page.read_text())
             if not commands(line) and not {"python", "python3", "torchrun", "pytest", "pip", "bash"} & set(line.split())
             for word in shell_words(line) if word.startswith("--")]
    assert any(word == "--honest_check_reward=0.1" for _, word in alone)  # the finder sees the options table
    assert not [f"{page}: {word}" for page, word in alone if word[2:].split("=", 1)[0] not in keys]


def test_every_bench_command_has_its_config_here():
    assert set(BENCH_CONFIGS) == set(bench.COMMANDS)


def test_every_file_the_docs_name_exists():
    named = [(page.relative_to(ROOT).as_posix(), text, path) for page in PAGES for text, path in named_files(page)]
    assert any(text == "docs/curves.png" for _, text, _ in named)  # the finder sees backticks and links
    missing = [f"{page}: {text}" for page, text, path in named if not path.exists()]
    assert not missing


def test_every_test_the_docs_name_exists():
    defined = {name for path in (ROOT / "tests").glob("test_*.py")
               for name in re.findall(r"^def (\w+)", path.read_text(), re.M)}
    named = {(page.name, word) for page in PAGES for line in shown_code(page.read_text())
             for word in re.findall(r"(?<![\w/.])(test_\w+)(?![\w.])", line)}
    assert not [f"{page}: {word}" for page, word in named if word not in defined]


def test_every_link_to_a_section_finds_its_heading():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)\s]*#[^)\s]+)\)", page.read_text()):
            path, anchor = target.split("#", 1)
            linked = (page.parent / path) if path else page
            if "://" not in path and linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.name}: {target}")
    assert not broken


def test_the_readme_and_results_page_show_the_seed_table_report_makes_from_results_json():
    with open(ROOT / "docs" / "results.json") as f:
        table = "\n".join(report.seed_table(json.load(f)))
    for page in (ROOT / "README.md", ROOT / "docs" / "results.md"):
        assert table in page.read_text(), f"{page.name} does not show the seed table of docs/results.json"


def test_the_readme_has_at_most_250_lines():
    assert len((ROOT / "README.md").read_text().splitlines()) <= 250


def test_the_docs_hold_no_word_of_how_the_project_was_made():
    found = [f"{page.relative_to(ROOT)}:{n}: {line}" for page in PAGES for n, line in process_words(page)]
    assert not found


def test_the_code_and_scripts_hold_no_word_of_how_the_project_was_made():
    files = [path for folder in (ROOT, ROOT / "docs", ROOT / "tests") for pattern in ("*.py", "*.sh")
             for path in sorted(folder.glob(pattern)) if path != Path(__file__).resolve()]
    found = [f"{path.relative_to(ROOT)}:{n}: {line}" for path in files for n, line in process_words(path)]
    assert not found
