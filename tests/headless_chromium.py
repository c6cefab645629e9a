"""Headless Chromium for the gallery's browser test and benchmark: Debian's
``chromium`` and ``chromium-driver``, driven by selenium. Selenium Manager is
never asked for a driver (it would download one): the driver's path is given.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
INSTALL_HINT = "apt-get update && apt-get install -y chromium chromium-driver"


def missing_reason() -> str | None:
    """Why headless Chromium cannot start here, or None if it can."""
    absent = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.is_file()]
    if absent:
        return f"{' and '.join(absent)} not found; install them with: {INSTALL_HINT}"
    return None


def start(width: int = 1280, height: int = 900) -> webdriver.Chrome:
    """A headless Chromium window that records the page's console messages."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    options.add_argument("--headless=new")
    # Root in containers and CI runners has no user namespaces for the sandbox.
    options.add_argument("--no-sandbox")
    # Docker's /dev/shm is 64 MB, too small for the renderer's shared memory.
    options.add_argument("--disable-dev-shm-usage")
    options.add_argument(f"--window-size={width},{height}")
    # No host name resolves: a page that reaches for the network fails to load
    # that resource (a console error) instead of depending on it.
    options.add_argument("--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)


def severe_console_messages(driver: webdriver.Chrome) -> list[str]:
    """The console errors (and failed loads) logged since the last call."""
    return [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"]


def screenshot_pixels(driver: webdriver.Chrome) -> np.ndarray:
    """The window as an (H, W, 3) uint8 array."""
    with Image.open(io.BytesIO(driver.get_screenshot_as_png())) as screenshot:
        return np.asarray(screenshot.convert("RGB"))
