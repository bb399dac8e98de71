"""HTML reports of run directories and insight views of steering vectors (DESIGN §14).

One self-contained HTML file per report: Jinja2 template, matplotlib figures as inline SVG,
no script and no external URL, so it opens offline from ``file://``.

Example:
    >>> from steerlab.report import report_page, write                      # doctest: +SKIP
    >>> write(report_page("runs/audit"), "audit.html")                      # doctest: +SKIP
    PosixPath('audit.html')
"""

from __future__ import annotations

from steerlab.report.render import inspect_page, render_html, report_page, write

__all__ = ["inspect_page", "render_html", "report_page", "write"]
