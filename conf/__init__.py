"""The packaged defaults, installed as the package `sexstream.conf` (see pyproject.toml):
sexstream.toml, SExtractor's default.sex/.conv/.nnw, log4j2.properties. Read them with
`sexstream.settings.conf_file(name)`; nothing here is code."""
