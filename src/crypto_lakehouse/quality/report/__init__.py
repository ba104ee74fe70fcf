"""The quality report: gather gold quality tables and render HTML and Markdown."""
