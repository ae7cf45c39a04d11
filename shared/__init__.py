"""The project's own package, used by the web process (`api/`) and the workers (`worker/`).

Layers, each a subpackage that imports only the layers below it (checked by import-linter, `make lint`):

    cli        the `relevance` command line
    jobs       job lifecycle, batches, browsing, export, word statistics, queue names
    render     heatmap HTML, terminal colours, charts
    store      database engine and tables, IMDB files and their import
    settings   the one settings object (the environment is read only there)
    relevance  tokenizer, weights, the NumPy engine, the explainer, training: NumPy only

`docs/architecture.md` draws the data path through them.
"""
