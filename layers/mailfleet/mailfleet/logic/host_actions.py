"""One job's action on one host, as the fan-out engine calls it: the threaded way (any
driver) and the event-loop way (drivers with an async transport). Shared by the in-process
worker and each batch of the Distributed Map, through Jobs.run_hosts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from mailfleet.drivers.base import Deadline, Driver
from mailfleet.errors import HostError
from mailfleet.logic import connect
from mailfleet.logic.job_records import JobRecords
from mailfleet.redact import mask_values
from mailfleet.store import secrets


class HostActions:
    """The job's action, parameters and hosts' inventory items, and the per-job caches
    (secrets read, parameters checked) its hosts share."""

    def __init__(self, job_id: str, action: str, params: dict[str, Any],
                 items: dict[str, dict[str, Any]], records: JobRecords,
                 refused: HostError | None) -> None:
        self.job_id = job_id
        self.action = action
        self.params = params
        self.items = items
        self.records = records
        self.refused = refused  # the policy said no, worker side: every host fails with it
        # One read (or check) per key, however many hosts ask for it at once.
        self._credentials: dict[str, asyncio.Future[Any]] = {}
        self._checked_for: dict[int, asyncio.Future[Any]] = {}

    def perform(self, host: Any, deadline: Deadline) -> Any:
        if self.refused is not None:
            raise self.refused
        item = self.items[host.id]
        driver = connect.driver_for(item, host=host)
        with _used(driver):
            checked = driver.validate(self.action, self.params, deadline)
            output = driver.perform(self.action, checked, deadline)
        return self._finish(item, driver, output)

    async def perform_async(self, host: Any, deadline: Deadline) -> Any:
        """Per-host work kept to the request itself: a secret is read once per job and the
        parameters checked and prepared (Driver.prepare) once per distinct command list
        (hosts of one version share the same list object); anything that may block runs
        in a thread."""
        if self.refused is not None:
            raise self.refused
        item = self.items[host.id]
        creds = await self._credentials_of(item.get("credentials_secret"))
        driver = connect.driver_for(item, host=host, credentials=creds)
        with _used(driver):
            checked = await self._checked(driver, deadline)
            output = await driver.perform_async(self.action, checked, deadline)
        return self._finish(item, driver, output)

    def _finish(self, item: dict[str, Any], driver: Driver, output: Any) -> Any:
        self.records.follow_host_changes(item, output, self.job_id)
        # Stored outputs never carry secrets: the driver's schema, then its host's own
        # credential values.
        return driver.safe_output(self.action, output)

    async def _credentials_of(self, name: str | None) -> Any:
        if not name:
            return None
        if name not in self._credentials:
            self._credentials[name] = asyncio.ensure_future(
                _in_thread(secrets.credentials_for, name))
        return await asyncio.shield(self._credentials[name])

    async def _checked(self, driver: Driver, deadline: Deadline) -> Any:
        """The params checked against the host's actions, prepared for perform_async."""
        seeded = driver.context.extras.get("doveadm_commands")
        if not seeded:  # asked of the host itself: per host, in a thread
            return await _in_thread(self._prepared, driver, deadline)
        if id(seeded) not in self._checked_for:
            self._checked_for[id(seeded)] = asyncio.ensure_future(
                _in_thread(self._prepared, driver, deadline))
        return await asyncio.shield(self._checked_for[id(seeded)])

    def _prepared(self, driver: Driver, deadline: Deadline) -> Any:
        return driver.prepare(self.action, driver.validate(self.action, self.params, deadline))


@contextlib.contextmanager
def _used(driver: Driver) -> Iterator[None]:
    """A driver for one host's action: closed after it, and no credential value of its
    host in the message of an error it raises."""
    try:
        yield
    except HostError as exc:
        exc.message = mask_values(exc.message, driver.credential_values())
        raise
    finally:
        driver.close()


async def _in_thread(fn: Callable[..., Any], *args: Any) -> Any:
    """A blocking call made from the fan-out's event loop: the loop carries on with the
    other hosts meanwhile."""
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)
