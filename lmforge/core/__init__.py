"""The host: all that a plugin or a recipe sees.

The plugin kinds and their hooks (`plugins`), the registry of entry points and
its checks (`registry`, `plugin_checks`), the one LightningModule
(`module.LanguageModel`) and the DataModules (`data`), backbone building and
block sharding (`backbone`, `sharding`), learning-rate schedules
(`schedules`) and the checkpoint format (`checkpoint`).

The core imports nothing from `lmforge.plugins`, `lmforge.runtime`,
`lmforge.cli` or `lmforge.testing` (import-linter contracts in pyproject.toml
keep it so): it knows plugin kinds, never plugin implementations.
"""
