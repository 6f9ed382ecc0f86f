"""The configurations `assistant eval --compare` sets beside this pipeline: dense, BM25, llama-index defaults."""

from __future__ import annotations

from pathlib import Path

from assistant.types import Answer


class LlamaIndexDefaults:
    """The stack one would otherwise reach for: llama-index's `VectorStoreIndex` with its default
    `SentenceSplitter` over the same files, the same embedding model, plain top-k retrieval.

    It retrieves but does not answer, so only retrieval metrics apply to it (`evaluation.run(...,
    answers=False)`).
    """

    def __init__(self, corpus_dir: Path, embed_model):
        import logging

        from llama_index.core import SimpleDirectoryReader, VectorStoreIndex

        # The reader warns, once per file, that the optional readers of PDFs and the like are not
        # installed: plain text needs none of them.
        readers = logging.getLogger("llama_index.core.readers.file.base")
        level = readers.level
        readers.setLevel(logging.ERROR)
        try:
            documents = SimpleDirectoryReader(
                str(corpus_dir), required_exts=[".txt", ".md"], recursive=True
            ).load_data()
        finally:
            readers.setLevel(level)
        self.index = VectorStoreIndex.from_documents(documents, embed_model=embed_model)

    def answer(self, question: str, history=(), top_k: int = 5) -> Answer:
        from assistant.thai import language
        from assistant.types import Chunk, Hit

        nodes = self.index.as_retriever(similarity_top_k=top_k).retrieve(question)
        hits = tuple(
            Hit(
                Chunk(n.node.node_id, "", "", "", 0, 0, 0, n.node.get_content(), ()),
                n.score or 0.0,
                n.score or 0.0,
                rank,
                None,
            )
            for rank, n in enumerate(nodes)
        )
        return Answer(question, "", False, (), language(question), question, hits)


def configurations(answerer, corpus_dir: Path) -> dict:
    """The side-by-side set for --compare: this pipeline, its two halves, and llama-index defaults."""
    from assistant.answering import Answerer
    from assistant.retrieval import Retriever

    index, config = answerer.retriever.index, answerer.config
    pipelines = {
        "hybrid (this pipeline)": answerer,
        "dense only": Answerer(Retriever(index, mode="dense"), config),
        "BM25 only": Answerer(Retriever(index, mode="lexical"), config),
        "llama-index defaults": LlamaIndexDefaults(corpus_dir, index.embed_model),
    }
    other = "int8" if config.embed_precision == "exact" else "exact"
    precise = precision_pipeline(config.with_(corpus_dir=corpus_dir, embed_precision=other))
    if precise is not None:
        pipelines[f"hybrid, {other} embedding precision"] = precise
    return pipelines


def precision_pipeline(config, progress: bool = True):
    """This pipeline at another embedding precision of the default model, on its own index in the cache
    folder (built once, then reused); None for a model without ONNX files."""
    from assistant import embedding, index
    from assistant.answering import Answerer
    from assistant.config import DEFAULT_EMBED_MODEL
    from assistant.retrieval import Retriever

    if config.embed_model != DEFAULT_EMBED_MODEL or config.embed_runtime == "sentence-transformers":
        return None
    config = config.with_(index_dir=config.cache_dir / "eval" / f"index-{config.embed_precision}")
    model = embedding.load(config)
    return Answerer(Retriever(index.open_index(config, model, progress=progress)), config)
