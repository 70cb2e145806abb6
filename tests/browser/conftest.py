"""Shared Playwright fixtures: one Chromium per test module, a fresh context per test.

Module scope (not session): a test module that drives Playwright its own way then never
finds a second sync Playwright running in the same thread.

Debian's /usr/bin/chromium is launched through executable_path; no browser is downloaded.
`page` fails the test on any uncaught JavaScript error and on anything the Content-Security-Policy
refused (an inline script or style, an outside host). `login(page, user)` gives a page the
session of a Django user of the live server.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.conftest import CHROMIUM_ARGS, chromium_path


@pytest.fixture(scope="module")
def playwright_instance():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright_instance):
    browser = playwright_instance.chromium.launch(
        executable_path=chromium_path(), args=CHROMIUM_ARGS
    )
    yield browser
    browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15000)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and "Content Security Policy" in msg.text
            else None
        ),
    )
    page.js_errors = errors
    yield page
    # Let requests the page started (prefetches) finish before the test's media folder goes.
    with contextlib.suppress(Exception):  # best effort; the assertion below is what matters
        page.wait_for_load_state("networkidle", timeout=5000)
    context.close()
    assert not errors, f"JavaScript errors or CSP refusals in the page: {errors}"


@pytest.fixture
def roles_present(transactional_db):
    """Live-server tests flush tables between tests, the role groups of the migration too."""
    from django.contrib.auth.models import Group

    from annotation.roles import ALL_ROLES

    for name in ALL_ROLES:
        Group.objects.get_or_create(name=name)


def login(page, live_server, user) -> None:
    """Give the page's browser context a logged-in session of `user`."""
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    page.context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}]
    )


def wait_ready(page) -> None:
    """Until review.js says the screen is usable (images and masks drawn)."""
    page.wait_for_function("() => document.documentElement.dataset.reviewReady === '1'")


def press_and_follow(page, key: str) -> None:
    """Press a choice key and wait for the next screen to be usable."""
    with page.expect_navigation():
        page.keyboard.press(key)
    wait_ready(page)
