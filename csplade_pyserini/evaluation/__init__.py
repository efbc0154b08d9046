"""Measures (ir-measures), result tables and benchmark reports."""
