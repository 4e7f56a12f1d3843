"""pypgflow.integrations.django, through the example bookshop (examples/django_project): Django
configured here on a PostgreSQL database of this module's own (Django is set up once per
process), a run started in a Django transaction committed and rolled back, the views, the
settings checked, and ``manage.py pypgflow_worker`` / ``pypgflow_migrate`` as processes on
both engines."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pypgflow import (
    ConfigurationError,
    IdempotencyConflict,
    InvalidArgument,
    NotSupported,
    RunNotFound,
    SerializationError,
)
from pypgflow.app import App
from pypgflow.status import RunStatus
from tests.conftest import ADMIN_URL, _admin, _with_dbname, running_worker
from tests.integrations.conftest import EXAMPLES

pytestmark = pytest.mark.timeout(90)
PROJECT = EXAMPLES / "django_project"


def url_of(conninfo: str) -> str:
    """A ``postgresql://`` URL for the bookshop's settings, from the suite's connection string."""
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    user = params.get("user") or "postgres"
    password = f":{params['password']}" if params.get("password") else ""
    host, port = params.get("host") or "127.0.0.1", params.get("port") or "5432"
    return f"postgresql://{user}{password}@{host}:{port}/{params['dbname']}"


@pytest.fixture(scope="module")
def shop_db(pg_template: str) -> Iterator[str]:
    """A migrated pypgflow database for the module, where Django is configured once."""
    name = f"pypgflow_django_{uuid.uuid4().hex[:10]}"
    with _admin() as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(pg_template)
            )
        )
    yield _with_dbname(ADMIN_URL, name)
    from django.db import connections

    connections.close_all()
    with _admin() as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.fixture(scope="module")
def django_setup(shop_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    import django
    from bookshop import settings as shop_settings
    from django.conf import settings
    from django.core.management import call_command

    if settings.configured:  # pragma: no cover - only this module configures Django
        pytest.skip("Django was configured elsewhere in this process")
    chosen = {key: getattr(shop_settings, key) for key in dir(shop_settings) if key.isupper()}
    local = tmp_path_factory.mktemp("django") / "local.db"
    chosen["DATABASES"] = {
        "default": shop_settings.database(url_of(shop_db)),
        "local": {"ENGINE": "django.db.backends.sqlite3", "NAME": str(local)},
    }
    chosen["PYPGFLOW"] = {**chosen["PYPGFLOW"], "DATABASE_URL": None}
    settings.configure(**chosen)
    django.setup()
    call_command("migrate", verbosity=0)
    yield
    from pypgflow.integrations.django import close_app

    close_app()


def orders() -> list[tuple[str, int]]:
    from orders.models import Order

    return list(Order.objects.order_by("id").values_list("sku", "quantity"))


@pytest.fixture
def shop(django_setup: None, shop_db: str) -> App:
    """The settings' App, on a clean slate: no orders, no runs."""
    from orders.models import Order

    from pypgflow.integrations.django import get_app

    Order.objects.all().delete()
    with psycopg.connect(shop_db, autocommit=True) as conn:
        conn.execute("TRUNCATE pypgflow.runs, pypgflow.tasks")
    return get_app()


def test_the_settings_app_is_on_djangos_database(shop: App, shop_db: str) -> None:
    from pypgflow.integrations.django import get_app

    assert get_app() is shop
    assert list(shop.workflows) == ["fulfil_order"]
    with psycopg.connect(shop.url or "") as conn:
        (dbname,) = conn.execute("SELECT current_database()").fetchone() or ("",)
    assert dbname == psycopg.conninfo.conninfo_to_dict(shop_db)["dbname"]


def test_a_run_started_in_a_committed_transaction_exists_with_its_rows(shop: App) -> None:
    from django.db import transaction
    from orders.flows import fulfil_order
    from orders.models import Order

    from pypgflow.integrations.django import start_in_transaction

    with transaction.atomic():
        order = Order.objects.create(sku="book", quantity=2)
        run = start_in_transaction(fulfil_order, {"order": order.id, "sku": "book", "quantity": 2})
        with pytest.raises(RunNotFound):  # the App's own connections do not see it yet
            shop.get_run(run.id)
    assert shop.get_run(run.id).status is RunStatus.PENDING
    assert orders() == [("book", 2)]
    with running_worker(shop):
        assert run.result(timeout=10) == f"order {order.id}: 2 x book, 24 EUR"


def test_a_rolled_back_transaction_leaves_neither_rows_nor_runs(shop: App) -> None:
    from django.db import transaction
    from orders.models import Order

    from pypgflow.integrations.django import start_in_transaction, start_many_in_transaction

    class PaymentRefused(Exception):
        pass

    started: list[Any] = []

    def place_and_refuse() -> None:
        with transaction.atomic():
            order = Order.objects.create(sku="pen", quantity=1)
            started.append(
                start_in_transaction(
                    "fulfil_order", {"order": order.id, "sku": "pen", "quantity": 1}
                )
            )
            started.extend(
                start_many_in_transaction(
                    "fulfil_order", [{"order": 0, "sku": "mug", "quantity": n} for n in (1, 2)]
                )
            )
            raise PaymentRefused

    with pytest.raises(PaymentRefused):
        place_and_refuse()
    assert len(started) == 3
    for run in started:
        with pytest.raises(RunNotFound):
            shop.get_run(run.id)
    assert [r.id for r in shop.list_runs()] == []
    assert orders() == []
    # A savepoint rolled back takes its runs with it, the outer transaction commits the rest.
    with transaction.atomic():
        kept = start_in_transaction("fulfil_order", {"order": 1, "sku": "pen", "quantity": 1})
        try:
            with transaction.atomic():
                start_in_transaction("fulfil_order", {"order": 2, "sku": "pen", "quantity": 2})
                raise PaymentRefused
        except PaymentRefused:
            pass
    assert [r.id for r in shop.list_runs()] == [kept.id]


def test_an_idempotent_start_in_a_transaction_finds_the_run_that_holds_its_key(
    shop: App,
) -> None:
    from django.db import transaction

    from pypgflow.integrations.django import start_in_transaction

    order = {"order": 7, "sku": "mug", "quantity": 1}
    with transaction.atomic():
        first = start_in_transaction("fulfil_order", order, idempotency_key="order-7")
        again = start_in_transaction("fulfil_order", order, idempotency_key="order-7")
        assert again.id == first.id
        with pytest.raises(IdempotencyConflict):
            start_in_transaction(
                "fulfil_order", {**order, "quantity": 2}, idempotency_key="order-7"
            )
        # the transaction is still good: Django's connection goes on
        assert orders() == []
    assert [r.id for r in shop.list_runs()] == [first.id]


def test_a_start_outside_a_transaction_or_on_sqlite_is_refused(shop: App) -> None:
    from django.db import transaction

    from pypgflow.integrations.django import start_in_transaction

    with pytest.raises(InvalidArgument, match=r"inside transaction\.atomic"):
        start_in_transaction("fulfil_order", {"order": 1, "sku": "pen", "quantity": 1})
    with transaction.atomic(using="local"), pytest.raises(NotSupported, match="on_commit"):
        start_in_transaction("fulfil_order", {}, using="local")
    with transaction.atomic(), pytest.raises(SerializationError):
        start_in_transaction("fulfil_order", {1, 2})  # not JSON: nothing written
    assert shop.list_runs() == []


def test_the_shops_views_place_an_order_and_show_its_run(shop: App) -> None:
    from django.test import Client

    client = Client()
    placed = client.post(
        "/orders/", {"sku": "book", "quantity": 3}, content_type="application/json"
    )
    assert placed.status_code == 202
    order_id, run_id = placed.json()["order"], placed.json()["run_id"]
    assert client.get(f"/orders/{order_id}/").json()["status"] == "pending"
    with running_worker(shop):
        assert shop.run(run_id).result(timeout=10) == f"order {order_id}: 3 x book, 36 EUR"
    shown = client.get(f"/orders/{order_id}/").json()
    assert (shown["status"], shown["receipt"]) == (
        "completed",
        f"order {order_id}: 3 x book, 36 EUR",
    )
    refused = client.post(
        "/orders/", {"sku": "car", "quantity": 1}, content_type="application/json"
    )
    assert refused.status_code == 400
    assert orders() == [("book", 3)]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ({"WORKFLOW": []}, "unknown keys 'WORKFLOW'"),
        ({"WORKFLOWS": "orders.flows:fulfil_order"}, "a list of 'module:name'"),
        ({"WORKFLOWS": ["orders.flows:PRICES"]}, "is a dict, not a pypgflow Workflow"),
        ({"WORKFLOWS": ["orders.flows:nothing"]}, "has no 'nothing'"),
        ({"WORKFLOWS": ["orders.nowhere:flow"]}, "no module 'orders.nowhere'"),
        ({"APP": "orders.flows:app", "WORKFLOWS": []}, "names an APP and WORKFLOWS"),
        ({"DATABASE": "other"}, "not a database of settings.DATABASES"),
        ({"DATABASE_URL": 5}, "must be a string"),
        ({"APP": "orders.flows:fulfil_order"}, "not a pypgflow App"),
        ("orders", "must be a dict"),
    ],
)
def test_the_setting_is_checked(django_setup: None, setting: Any, message: str) -> None:
    from django.test import override_settings

    from pypgflow.integrations.django import get_app

    with override_settings(PYPGFLOW=setting), pytest.raises(ConfigurationError, match=message):
        get_app()


def test_an_app_of_the_projects_own_and_a_changed_setting(django_setup: None) -> None:
    from django.test import override_settings

    from pypgflow.integrations.django import get_app

    before = get_app()
    with override_settings(PYPGFLOW={"APP": "tests.integrations.test_django:own_app"}):
        made = get_app()
        assert made.instance_id == "bookshop-own"
        assert get_app() is made
    assert get_app() is not before  # renewed when the setting changed back
    assert list(get_app().workflows) == ["fulfil_order"]


def own_app() -> App:
    from orders.flows import fulfil_order

    from pypgflow.integrations.django.conf import django_database_url

    return App(django_database_url("default"), workflows=[fulfil_order], instance_id="bookshop-own")


# -- manage.py, as processes -------------------------------------------------------------------


def manage(
    env: dict[str, str], *args: str, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=PROJECT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def project_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """The bookshop on this engine: Django's database and the runs' on PostgreSQL, or two
    SQLite files."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYPGFLOW_", "BOOKSHOP_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(Path.cwd()), *sys.path])
    if database_url.startswith("sqlite"):
        env["BOOKSHOP_DATABASE_URL"] = f"sqlite:///{tmp_path / 'django.db'}"
        env["BOOKSHOP_PYPGFLOW_URL"] = database_url
    else:
        env["BOOKSHOP_DATABASE_URL"] = url_of(database_url)
    return env


@pytest.mark.slow
def test_manage_py_pypgflow_worker_completes_runs_and_stops_on_sigterm(
    database_url: str, tmp_path: Path
) -> None:
    from orders.flows import fulfil_order

    env = project_env(database_url, tmp_path)
    migrated = manage(env, "pypgflow_migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert "up to date" in migrated.stdout or "applied" in migrated.stdout
    with App(database_url, workflows=[fulfil_order]) as app:
        run = app.start(fulfil_order, {"order": 9, "sku": "pen", "quantity": 5})
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "pypgflow_worker", "--queue", "default=4"],
            cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            assert run.result(timeout=30) == "order 9: 5 x pen, 10 EUR"
            [instance] = app.instances()
            assert instance.queues == {"default": 4}
        finally:
            worker.send_signal(signal.SIGTERM)
            output, _ = worker.communicate(timeout=30)
        assert worker.returncode == 0, output
        assert "stopped" in output
        deadline = time.monotonic() + 5
        while app.instances() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert app.instances() == []


def test_manage_py_pypgflow_migrate_creates_the_schema(empty_pg_url: str, tmp_path: Path) -> None:
    env = project_env(empty_pg_url, tmp_path)
    first = manage(env, "pypgflow_migrate")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("applied pypgflow schema versions 1")
    assert manage(env, "pypgflow_migrate").stdout.strip() == "pypgflow schema up to date"
    with App(empty_pg_url) as app:
        assert app.list_runs() == []


def test_manage_py_pypgflow_worker_says_what_is_wrong(empty_pg_url: str, tmp_path: Path) -> None:
    env = project_env(empty_pg_url, tmp_path)
    unmigrated = manage(env, "pypgflow_worker")
    assert unmigrated.returncode == 1
    assert "migrate" in unmigrated.stderr
    bad_queue = manage(env, "pypgflow_worker", "--queue", "default=0")
    assert bad_queue.returncode == 1
    assert "SLOTS must be at least 1" in bad_queue.stderr
