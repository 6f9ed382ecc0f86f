"""The `assistant` command: build the index, serve the web chat, ask, chat, evaluate, benchmark, read feedback."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import asdict, replace
from datetime import UTC
from pathlib import Path

import click

from assistant.config import DEFAULT_EMBED_MODEL, Config
from assistant.errors import AssistantError


def _offline(config: Config) -> None:
    """The default model and local folders need no network: make sure nothing tries."""
    if config.embed_model == DEFAULT_EMBED_MODEL or Path(config.embed_model).exists():
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def _config(corpus: Path | None, index_dir: Path | None, **overrides) -> Config:
    config = Config.from_env(corpus_dir=corpus, index_dir=index_dir, **overrides)
    _offline(config)
    _logging(config.log_level)
    return config


class _Stderr(logging.StreamHandler):
    """Log lines on whatever `sys.stderr` is when they are written (click's test runner swaps it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value):
        pass


def _quiet_others(record: logging.LogRecord) -> bool:
    """Other libraries' messages below WARNING are noise to a user: ONNX Runtime's quantizer logs
    hundreds of INFO lines through the root logger while the model is prepared, bm25s sets its own
    logger to DEBUG, httpx logs every request Gradio makes."""
    return record.levelno >= logging.WARNING or record.name == "assistant" or record.name.startswith("assistant.")


def _logging(level: str) -> None:
    """One handler on the root logger, on stderr: the assistant's messages from `level` on, everyone
    else's from WARNING on (all of them with `debug`). Installed before any library is imported, so
    the quantizer's import-time `logging.basicConfig` finds a handler and adds none of its own."""
    root = logging.getLogger()
    handler = next((h for h in root.handlers if isinstance(h, _Stderr)), None)
    if handler is None:
        handler = _Stderr()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    handler.filters.clear()
    if level.lower() != "debug":
        handler.addFilter(_quiet_others)
    root.setLevel(level.upper())


def _open(config: Config):
    """The answering pipeline for `config`: loaded here, or by the function given as the group's object
    (`CliRunner().invoke(cli, args, obj=opener)`), as the tests do to reuse what they loaded."""
    from assistant.chat import open_assistant

    return (click.get_current_context().obj or open_assistant)(config)


def _paths(command):
    command = click.option(
        "--index",
        "index_dir",
        type=click.Path(path_type=Path),
        help="Index directory [env ASSISTANT_INDEX_DIR; default index/].",
    )(command)
    command = click.option(
        "--corpus",
        type=click.Path(path_type=Path),
        help="Corpus directory [env ASSISTANT_CORPUS_DIR; default corpus/].",
    )(command)
    return command


class _Group(click.Group):
    """Turns the library's errors into one readable line and a non-zero exit, never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except AssistantError as error:
            click.secho(f"Error: {error}", fg="red", err=True)
            sys.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted.", err=True)
            sys.exit(130)


@click.group(cls=_Group)
@click.version_option(package_name="assistant")
def cli():
    """Ask questions, in Thai or English, about a Thai document on Latin American integration.

    Answers quote the documents and cite the passages they come from.
    """


@cli.command("index")
@_paths
def index_command(corpus, index_dir):
    """Build the index from the corpus (replacing the old one only when the build succeeds).

    \b
    Examples:
      assistant index
      assistant index --corpus corpus --index index
    """
    from assistant import embedding, index

    config = _config(corpus, index_dir)
    started = time.perf_counter()
    built = index.build(config, embedding.load(config), progress=True)
    for problem in built.manifest["problems"]:
        click.secho(f"Skipped {problem}", fg="yellow", err=True)
    click.echo(
        f"Indexed {built.manifest['chunks']} passages from {len(built.manifest['documents'])} "
        f"documents into {config.index_dir} in {time.perf_counter() - started:.1f} s."
    )
    from assistant import decision

    _, problem = decision.load(config.decision_model, index.FORMAT_VERSION, built.manifest["embed_model"])
    if problem:
        click.secho(f"Warning: {problem}; until then answers are only uncertain or not found.", fg="yellow", err=True)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=click.IntRange(1, 65535), default=7860, show_default=True)
@_paths
def serve(host, port, corpus, index_dir):
    """Start the web chat, the JSON API and the embedding page on one server.

    \b
    Examples:
      assistant serve
      ASSISTANT_ALLOWED_HOSTS=chat.example.org ASSISTANT_ALLOWED_ORIGINS=https://example.org \\
        assistant serve --host 0.0.0.0 --port 8080
    """
    from assistant.web import create_app
    from assistant.web import serve as run_server

    started = time.perf_counter()
    config = _config(corpus, index_dir)
    if host not in {"0.0.0.0", "::"} and "*" not in config.hosts and host not in config.hosts:
        config = config.with_(allowed_hosts=",".join([*config.hosts, host]))
    if click.get_current_context().obj is None:  # timed part by part for the metrics
        from assistant import chat, embedding, index

        loading = time.perf_counter()
        embed_model = embedding.load(config)
        model_s = time.perf_counter() - loading
        answerer = chat.pipeline(index.open_index(config, embed_model, progress=True), config)
        load_seconds = {"model": model_s, "index": time.perf_counter() - loading - model_s}
    else:
        answerer, load_seconds = _open(config), None
    answerer.answer("บราซิล")  # loads the Thai dictionaries now, not during the first visitor's question
    app = create_app(answerer, config, load_seconds)
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    click.echo(
        f"Ready in {time.perf_counter() - started:.1f} s. Answers: {_mode(config)}.\n"
        f"  Chat:        {base}/\n  Embed:       {base}/embed\n"
        + (f"  API docs:    {base}/docs\n" if config.api_docs else "")
        + f"  Health:      {base}/api/health",
        err=True,
    )
    run_server(app, host, port, config)


@cli.command()
@click.argument("question")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
@click.option("--top-k", type=click.IntRange(1, 50), help="Passages to retrieve [default 5].")
@click.option(
    "--answer-language",
    type=click.Choice(["auto", "th", "en"]),
    default="auto",
    show_default=True,
    help="The answer's language; auto answers in the question's.",
)
@_paths
def ask(question, as_json, top_k, answer_language, corpus, index_dir):
    """Answer one QUESTION with cited passages.

    \b
    Examples:
      assistant ask "บราซิลยุติการเจรจาอะไร"
      assistant ask "Which Peruvian company owns Chile's largest cement company?" --json
      assistant ask "บราซิลยุติการเจรจาอะไร" --answer-language en
    """
    from assistant.answering import validate
    from assistant.chat import render

    config = _config(corpus, index_dir, top_k=top_k)
    validate(question, config.max_question_chars)  # fail fast, before loading the model
    answer = _open(config).answer(question, top_k=top_k, answer_language=answer_language)
    if as_json:
        click.echo(json.dumps(answer.to_dict(), ensure_ascii=False))
    else:
        click.echo(render(answer))


@cli.command()
@click.option("--top-k", type=click.IntRange(1, 50), help="Passages to retrieve [default 5].")
@click.option(
    "--answer-language",
    type=click.Choice(["auto", "th", "en"]),
    default="auto",
    show_default=True,
    help="The answers' language; auto answers in each question's.",
)
@_paths
def chat(top_k, answer_language, corpus, index_dir):
    """Talk with the assistant in the terminal; follow-up questions use the conversation.

    \b
    Type /clear to start over, /exit (or Ctrl-D) to leave.
    Example:
      assistant chat
    """
    from assistant.chat import Conversation, render

    config = _config(corpus, index_dir, top_k=top_k)
    conversation = Conversation(_open(config), answer_language=answer_language)
    click.echo(
        f"Answers: {_mode(config)}. Ask about the documents in Thai or English. /clear starts over, /exit leaves."
    )
    while True:
        try:
            question = input("> ")
        except EOFError:
            click.echo()
            return
        if question.strip() in {"/exit", "/quit"}:
            return
        if question.strip() == "/clear":
            conversation.clear()
            click.echo("(conversation cleared)")
            continue
        if not question.strip():
            continue
        try:
            streamed = False
            for event in conversation.stream(question):
                if isinstance(event, str):  # an LLM writing: show it as it comes
                    click.echo(event, nl=False)
                    streamed = True
                    continue
                if streamed:
                    click.echo("\n")
                click.echo(render(event) + "\n")
        except AssistantError as error:  # a bad question must not end the conversation
            click.secho(f"Error: {error}", fg="red", err=True)


def _mode(config: Config) -> str:
    if config.llm == "extractive":
        return "extractive (quoted from the documents)"
    return f"{config.llm} LLM {config.llm_model} at {config.llm_base_url}"


def _floors(ctx, param, values) -> tuple:
    """--fail-under METRIC=VALUE, repeated, or @FILE with one METRIC=VALUE a line (# comments)."""
    from assistant.evaluation import parse_floor

    floors = []
    for value in values:
        items = [("", value)]
        if value.startswith("@"):
            path = Path(value[1:])
            try:
                lines = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as error:
                raise click.BadParameter(f"cannot read {path}: {error}", ctx, param) from None
            items = [(f"{path} line {n}: ", line.split("#", 1)[0].strip()) for n, line in enumerate(lines, 1)]
        for where, item in items:
            if not item:
                continue
            try:
                floors.append(parse_floor(item))
            except ValueError as error:
                raise click.BadParameter(f"{where}{error}", ctx, param) from None
    return tuple(floors)


@cli.command("eval")
@click.argument("questions", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jsonl", "csv"]),
    help="The question set's format [default: by extension, .csv is CSV, anything else JSON Lines].",
)
@click.option(
    "--template",
    type=click.Choice(["csv", "jsonl"]),
    help="Print a question set to start from (a header and three example questions) and exit.",
)
@click.option(
    "--strict",
    is_flag=True,
    help="Exit with status 2, before running, when a line is skipped or a value warned about (for CI).",
)
@click.option(
    "--split",
    type=click.Choice(["dev", "test", "all"]),
    default="all",
    show_default=True,
    help='Run only the questions of this split (their "split" field).',
)
@click.option("--top-k", type=click.IntRange(1, 50), default=5, show_default=True)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the metrics and per-question results to this JSON file.",
)
@click.option(
    "--csv",
    "csv_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write one row per question to this CSV file.",
)
@click.option(
    "--junit",
    "junit_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write JUnit XML (one test case per question) for CI test reports: GitLab, Jenkins, GitHub.",
)
@click.option(
    "--show-failures",
    type=click.IntRange(0),
    default=20,
    show_default=True,
    metavar="N",
    help="End with a table of at most N failed questions (0: none).",
)
@click.option(
    "--report",
    "report_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write a self-contained HTML report with charts and the failed questions.",
)
@click.option(
    "--compare", is_flag=True, help="Also run dense only, BM25 only and llama-index defaults on the same questions."
)
@click.option(
    "--baseline",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A previous --json results file: show per question what was fixed and what regressed, "
    "and each metric's change.",
)
@click.option(
    "--fail-under",
    "floors",
    multiple=True,
    callback=_floors,
    metavar="METRIC=VALUE",
    help="Exit with status 1 when METRIC (or LANG:METRIC, e.g. en:hit@1) is below VALUE; "
    "repeatable; @FILE reads one METRIC=VALUE a line.",
)
@_paths
def eval_command(
    questions,
    fmt,
    template,
    strict,
    split,
    top_k,
    json_out,
    csv_out,
    junit_out,
    show_failures,
    report_out,
    compare,
    baseline,
    floors,
    corpus,
    index_dir,
):
    """Run a question set (JSON Lines or CSV) through the chat's answer path, print the metrics and the
    failed questions.

    Latency leaves out a warm-up: the first question is asked once more, unscored, before the run.

    \b
    Examples:
      assistant eval --template csv > my-questions.csv
      assistant eval my-questions.csv --junit eval-junit.xml --strict
      assistant eval eval/questions.jsonl --compare --report eval/report.html --json eval/results.json
      assistant eval eval/questions.jsonl --split dev --baseline eval/results.json --csv dev.csv
      assistant eval eval/questions.jsonl --split test --fail-under @eval/floors.txt --fail-under en:hit@1=0.7
    """
    from assistant import evaluation, report

    if template:
        click.echo(evaluation.template(template), nl=False)
        return
    if questions is None:
        raise click.UsageError("Missing argument 'QUESTIONS' (or --template csv, to print a set to start from).")
    config = _config(corpus, index_dir)
    question_set = _question_set(questions, fmt, strict)
    selected = evaluation.select(question_set, split)
    previous = evaluation.load_results(baseline) if baseline else None  # fail before the model loads
    answerer = _open(config)
    outcomes = evaluation.run(answerer, selected, top_k=top_k, progress=True)
    result = evaluation.report(outcomes)
    click.echo(evaluation.loaded_line(split, len(outcomes), question_set) + "\n")
    click.echo(report.table(result))
    if result["by_type"]:
        click.echo()
        click.echo(report.type_table(result))
    side_by_side = _side_by_side(answerer, config, selected, outcomes, top_k) if compare else None
    if side_by_side is not None:
        click.echo()
        click.echo(report.compare_table(side_by_side))
    changes = None
    if previous is not None:
        changes = {"file": str(baseline), **evaluation.diff(previous, outcomes, result)}
        click.echo()
        click.echo(report.diff_text(changes, split))
    manifest = answerer.retriever.index.manifest
    results = evaluation.document(
        outcomes,
        result,
        question_set,
        split,
        {
            "top_k": top_k,
            "embed_model": manifest["embed_model"],
            "chunking": manifest["chunking"],
            "questions": str(questions),
        },
        side_by_side,
        changes,
    )
    failure_table = report.failure_table(selected, outcomes, show_failures)
    if failure_table:
        click.echo()
        click.echo(failure_table)
    if json_out:
        json_out.write_text(json.dumps(results, ensure_ascii=False, indent=1), encoding="utf-8")
    if csv_out:
        report.write_csv(csv_out, outcomes)
    if junit_out:
        report.write_junit(junit_out, selected, outcomes, name=str(questions), split=split)
    if report_out:
        texts = {c.chunk_id: c.text for c in answerer.retriever.index.chunks}
        report.write_html(report_out, results, selected, outcomes, texts)
        click.echo(f"Report written to {report_out}", err=True)
    failures = evaluation.below(result, floors)
    for failure in failures:
        click.secho(f"Below the floor: {failure}", fg="red", err=True)
    if failures:
        sys.exit(1)


def _question_set(questions: Path, fmt: str | None, strict: bool):
    """The question set, its skipped lines and warnings told; with --strict any of them stops the run."""
    from assistant import evaluation

    question_set = evaluation.load_questions(questions, fmt)
    for problem in question_set.skipped:
        click.secho(f"Skipped {questions}:{problem}", fg="yellow", err=True)
    for warning in question_set.warnings:
        click.secho(f"Warning: {questions}: {warning}", fg="yellow", err=True)
    if strict and not question_set.clean:
        click.secho(
            f"--strict: {len(question_set.skipped)} skipped line(s) and {len(question_set.warnings)} warning(s) "
            f"in {questions}; fix them, or run without --strict.",
            fg="red",
            err=True,
        )
        sys.exit(2)
    return question_set


def _side_by_side(answerer, config: Config, selected, outcomes, top_k: int | None) -> dict:
    """--compare: the metrics of each configuration (`baselines.configurations`) on the same questions;
    the served one's are the run already made."""
    from assistant import evaluation
    from assistant.baselines import LlamaIndexDefaults, configurations

    side_by_side = {}
    for name, pipeline in configurations(answerer, config.corpus_dir).items():
        answers = not isinstance(pipeline, LlamaIndexDefaults)
        runs = (
            outcomes
            if pipeline is answerer
            else evaluation.run(pipeline, selected, top_k=top_k, progress=True, desc=name, answers=answers)
        )
        side_by_side[name] = evaluation.report(runs)
    return side_by_side


@cli.command("train-decision")
@click.argument(
    "questions", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=Path("eval/questions.jsonl")
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write the model [default: the one the package ships, assistant/decision.json].",
)
@_paths
def train_decision_command(questions, out, corpus, index_dir):
    """Train the answer-decision model on the dev split of QUESTIONS (deterministic: fixed seeds).

    Drafts an answer to every dev question, labels it by whether its quote holds an accepted answer,
    fits the calibrated decision and picks its thresholds by repeated cross-validation, and writes the
    coefficients with the hash of the questions it saw.

    \b
    Examples:
      assistant train-decision
      assistant train-decision eval/questions.jsonl --out /tmp/decision.json
    """
    from assistant import decision, evaluation
    from assistant.chat import open_assistant
    from assistant.index import FORMAT_VERSION

    config = _config(corpus, index_dir)
    _offline(config)
    dev = evaluation.select(evaluation.load_questions(questions), "dev")
    answerer = open_assistant(replace(config, llm="extractive"))
    manifest = answerer.retriever.index.manifest
    examples = evaluation.decision_examples(answerer, dev, progress=True)
    lines = [json.dumps(asdict(q), ensure_ascii=False, sort_keys=True) for q in dev.questions]
    model = decision.train(examples, decision.data_hash(lines), FORMAT_VERSION, manifest["embed_model"])
    target = out or config.decision_model
    decision.write(model, target)
    figures = model["metrics"]["dev_out_of_fold"]
    click.echo(
        f"Trained on {len(examples)} dev questions; thresholds {model['thresholds']}; dev out-of-fold: "
        f"Brier {figures['brier']}, confident precision {figures['confident_precision']}, "
        f"answer_match {figures['answer_match']}, answerable not found {figures['answerable_not_found']}. "
        f"Wrote {target}."
    )


@cli.command("eval-table")
@click.argument("results", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def eval_table_command(results):
    """Print evaluation tables (Markdown) from results files of `assistant eval --json`.

    One file: its tables (docs/evaluation.md). Several (the splits): one table with them side by side,
    each beside its baseline (the README's).

    \b
    Examples:
      assistant eval-table eval/results.json
      assistant eval-table eval/results.json eval/results-dev.json
    """
    from assistant import evaluation, report

    loaded = [evaluation.load_results(path) for path in results]
    click.echo(report.readme_tables(loaded[0]) if len(loaded) == 1 else report.side_by_side_table(loaded))


@cli.command("config-table")
@click.option("--common", is_flag=True, help="Only the settings most people change (the README's table).")
def config_table_command(common):
    """Print docs/configuration.md (every setting, its variable, default and meaning), generated from
    assistant/config.py, or with --common the README's table of the settings most people change.

    \b
    Examples:
      assistant config-table > docs/configuration.md
      assistant config-table --common
    """
    from assistant import config

    click.echo(config.settings_table(config.COMMON_SETTINGS) if common else config.configuration_page(), nl=common)


@cli.command("bench")
@click.option(
    "--quick",
    is_flag=True,
    help="A reduced run in under two minutes (real corpus and 500 synthetic passages, 30 questions).",
)
@click.option(
    "--json",
    "json_out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write every number to this JSON file.",
)
@click.option(
    "--questions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=Path("eval/questions.jsonl"),
    show_default=True,
    help="Questions to time.",
)
@click.option(
    "--corpus", type=click.Path(path_type=Path), help="Corpus directory [env ASSISTANT_CORPUS_DIR; default corpus/]."
)
@click.option(
    "--max-passages",
    type=click.IntRange(1),
    default=None,
    help="Leave out the synthetic corpora larger than this (the 100k one takes about two hours to embed once).",
)
@click.option(
    "--build-passages",
    type=click.IntRange(100),
    default=None,
    help="Passages of the synthetic corpus indexed from scratch [default: 10,000; 500 with --quick].",
)
@click.option(
    "--cluster",
    "through_nginx",
    is_flag=True,
    help="Only measure /api/ask through nginx with one and two replicas (Redis, PostgreSQL, nginx: make system).",
)
def bench_command(quick, json_out, questions, corpus, max_passages, build_passages, through_nginx):
    """Measure cold start, index build, query latency by stage at growing corpus sizes (with HNSW
    against exact search and llama-index's default query path in the same run), HTTP load, a soak and
    memory by component; the torch path and the int8 precision are measured beside the default.

    Indexes and synthetic corpora go to the cache folder, never to the project's index/. The first full
    run embeds a synthetic corpus of 100k passages (about two hours on 2 cores); later runs reuse it.

    \b
    Examples:
      assistant bench --quick
      assistant bench --json bench.json
      assistant bench --max-passages 10000
      assistant bench --cluster
    """
    from assistant import bench, evaluation

    config = _config(corpus, None)
    started = time.perf_counter()
    if through_nginx:
        asked = evaluation.load_questions(questions).questions[:60]
        rows = bench.through_nginx(config, asked, log=lambda m: click.echo(m, err=True))
        click.echo(bench.cluster_table(rows))
        if json_out:
            json_out.write_text(json.dumps({"cluster": rows}, indent=1), encoding="utf-8")
        return
    result = bench.run(
        config,
        questions,
        quick=quick,
        log=lambda m: click.echo(m, err=True),
        max_passages=max_passages,
        build_passages=build_passages,
    )
    result["seconds"] = time.perf_counter() - started
    click.echo(bench.table(result))
    click.echo(f"\nBenchmark took {result['seconds']:.0f} s.", err=True)
    if json_out:
        json_out.write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")


@cli.command("bench-table")
@click.argument("results", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--headline", is_flag=True, help="Only the README's table: the default path beside torch.")
def bench_table_command(results, headline):
    """Print the benchmark tables (Markdown) of docs/benchmarks.md from a file of `assistant bench --json`,
    or with --headline the README's.

    \b
    Examples:
      assistant bench-table docs/bench.json
      assistant bench-table --headline docs/bench.json
    """
    from assistant import bench

    try:
        result = json.loads(results.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise AssistantError(f"{results} is not a benchmark results file ({error}).") from None
    click.echo(bench.headline(result) if headline else bench.table(result))


@cli.command("feedback")
@click.option("--down", is_flag=True, help="Only thumbs down.")
@click.option(
    "--since",
    type=click.DateTime(formats=["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S"]),
    help="Only entries from this date (UTC) on.",
)
@click.option(
    "--export",
    "export",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the thumbs-down questions to this file as draft evaluation lines (JSON Lines).",
)
@click.option(
    "--file",
    "path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read this feedback log [default: ASSISTANT_FEEDBACK_URL's database if set, else ASSISTANT_FEEDBACK_PATH].",
)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per entry instead of text.")
def feedback_command(down, since, export, path, as_json):
    """List the visitors' ratings of answers (each answer once, with its latest vote and comment), or
    turn the thumbs-down questions into draft evaluation lines that a person completes (answers,
    evidence) and adds to eval/questions.jsonl. Reads the PostgreSQL table when ASSISTANT_FEEDBACK_URL
    is set, else the log and its rotated files; malformed lines are skipped and counted. Line breaks,
    control and bidi characters in questions and comments are listed as escapes (\\n, \\u202e).

    \b
    Examples:
      assistant feedback
      assistant feedback --down --since 2026-11-01
      assistant feedback --export eval/drafts.jsonl
      ASSISTANT_FEEDBACK_URL=postgresql://assistant@db/assistant assistant feedback --json
    """

    from assistant import feedback

    config = Config.from_env()
    if path is not None:
        store = feedback.JsonlStore(path, int(config.feedback_max_mb * 1_000_000), config.feedback_keep_files)
    else:
        store = feedback.open_store(config)
        path = config.feedback_url.split("@")[-1] if config.feedback_url else config.feedback_path
    try:
        entries, skipped = store.entries()
    except feedback.FeedbackUnavailableError:
        raise AssistantError(store.problem or "The feedback store cannot be read.") from None
    finally:
        store.close()
    if since is not None:
        since = since.replace(tzinfo=UTC)
        entries = [e for e in entries if e.time >= since]
    if skipped:
        click.secho(f"Skipped {skipped} malformed line{'s' if skipped != 1 else ''} in {path}.", fg="yellow", err=True)
    if export:
        lines = feedback.drafts(entries)
        export.parent.mkdir(parents=True, exist_ok=True)
        export.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
        click.echo(
            f"Wrote {len(lines)} draft question{'s' if len(lines) != 1 else ''} to {export}: fill in "
            "`answers` and `evidence` before adding them to the evaluation set.",
            err=True,
        )
        return
    if down:
        entries = [e for e in entries if not e.liked]
    for e in entries:
        if as_json:
            click.echo(
                json.dumps(
                    {
                        "time": e.time.isoformat(),
                        "liked": e.liked,
                        "answer_id": e.answer_id,
                        "question": e.question,
                        "answer": e.answer,
                        "comment": e.comment,
                        "votes": e.votes,
                    },
                    ensure_ascii=False,
                )
            )
            continue
        click.echo(f"{e.time:%Y-%m-%d %H:%M}  {'👍' if e.liked else '👎'}  {feedback.printable(e.question)}")
        if e.comment:
            click.echo(f"    comment: {feedback.printable(e.comment)}")
    if not as_json:
        click.echo(
            f"{len(entries)} entr{'ies' if len(entries) != 1 else 'y'}"
            f" ({sum(not e.liked for e in entries)} thumbs down).",
            err=True,
        )
