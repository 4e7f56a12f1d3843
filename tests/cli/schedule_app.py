"""An app with cron schedules for the CLI tests of `pypgflow schedules`, pointed at each test's
database through PYPGFLOW_DATABASE_URL (``tests.cli.schedule_app:create_app``)."""

from __future__ import annotations

import os

from pypgflow import Workflow
from pypgflow.app import App

report = Workflow("report")


@report.step
def build(input: dict[str, str]) -> str:
    return f"report as {input['format']}"


def create_app() -> App:
    app = App(os.environ["PYPGFLOW_DATABASE_URL"], workflows=[report])
    app.schedule("nightly-report", "0 3 * * *", report, {"format": "pdf"}, timezone="Europe/Paris")

    @app.job(cron="*/15 * * * *", queue="maintenance")
    def cleanup() -> str:
        return "clean"

    return app
