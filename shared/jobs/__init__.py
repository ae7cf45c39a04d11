"""Jobs: creating and cancelling them, running one batch (the pure function behind the worker task), browsing
and exporting their explanations, word statistics, and the queue names the api and the workers share.
May import `shared.render`, `shared.store`, `shared.settings` and `shared.relevance`; never `api` or
`worker`."""
