"""Code shared by the web app, the workers and the command line: settings, tokenizer, engine, storage."""
