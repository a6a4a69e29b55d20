"""The live console at /_esjoin/ui (docs/console.md): a page and its JSON, served by the endpoint."""
