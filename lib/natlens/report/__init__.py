"""Incident reports: parameterized notebooks run by papermill, rendered to one HTML file.

Modules, one job each:
    execute    papermill run + strict failure detection (errors, timeouts, dead kernels)
    render     executed notebook -> self-contained HTML (no code, TOC, embedded images)
    anonymize  Crypto-PAn prefix-preserving IP mapping for reports shared outside
"""
