"""JUnit XML for ``ternbench check --junit FILE``: one test case per check, a failure per violation.

CI systems (GitHub Actions, GitLab, Jenkins) read this format; an incomparable input is written
as a single errored test case so the CI page shows why the gate could not run.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

from reports.check import CheckReport
from reports.fileio import atomic_write_text

SUITE = "ternbench check"


def _write(tree: ET.Element, path: str | os.PathLike) -> Path:
    ET.indent(tree)
    return atomic_write_text(path, '<?xml version="1.0" encoding="utf-8"?>\n'
                             + ET.tostring(tree, encoding="unicode") + "\n")


def write_junit(report: CheckReport, path: str | os.PathLike) -> Path:
    n_fail = len(report.violations)
    root = ET.Element("testsuites", name=SUITE, tests=str(len(report.results)), failures=str(n_fail), errors="0")
    suite = ET.SubElement(root, "testsuite", name=SUITE, tests=str(len(report.results)), failures=str(n_fail),
                          errors="0", skipped="0")
    for r in report.results:
        case = ET.SubElement(suite, "testcase", classname=r.model_id, name=f"{r.target}: {r.check}")
        if not r.passed:
            f = ET.SubElement(case, "failure", message=f"{r.check} on {r.target}: {r.change} ({r.threshold})",
                              type=r.check.split(":")[0])
            f.text = (f"baseline {r.baseline}, value {r.value}, change {r.change}, threshold {r.threshold}"
                      + (f"; {r.note}" if r.note else ""))
        elif r.note:  # a pass worth knowing about (e.g. an increase within the runs' spread)
            ET.SubElement(case, "system-out").text = f"change {r.change}, threshold {r.threshold}; {r.note}"
    if report.notes:
        ET.SubElement(suite, "system-out").text = "\n".join(report.notes)
    return _write(root, path)


def write_junit_error(message: str, path: str | os.PathLike) -> Path:
    root = ET.Element("testsuites", name=SUITE, tests="1", failures="0", errors="1")
    suite = ET.SubElement(root, "testsuite", name=SUITE, tests="1", failures="0", errors="1", skipped="0")
    case = ET.SubElement(suite, "testcase", classname="ternbench", name="inputs are comparable")
    ET.SubElement(case, "error", message=message.splitlines()[0], type="IncomparableError").text = message
    return _write(root, path)
