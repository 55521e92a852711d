"""`heed report`: compliance figures from the audit stream and state, as text, JSON or HTML."""

from proxy.report.compute import Report, build_report
from proxy.report.render_html import render_html
from proxy.report.render_text import as_dict, render_json, render_text

RENDERERS = {"text": render_text, "json": render_json, "html": render_html}

__all__ = ["RENDERERS", "Report", "as_dict", "build_report", "render_html", "render_json",
           "render_text"]
