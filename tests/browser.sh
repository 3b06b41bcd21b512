#!/usr/bin/env bash
# Runs "$@" with ATELIER_TEST_CHROMIUM and ATELIER_TEST_CHROMEDRIVER set to Debian's Chromium and
# its ChromeDriver (one source package, so their versions always match; Selenium is given both
# paths and never downloads a driver). Installs them when they are missing (CI machines start
# without them). If they cannot be had (no apt, not root), the command runs without them and the
# browser tests are skipped; CI (CI=true) refuses to skip them.
set -euo pipefail

chromium=/usr/bin/chromium
chromedriver=/usr/bin/chromedriver
present() { [ -x "$chromium" ] && [ -x "$chromedriver" ]; }

if ! present && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "tests/browser.sh: installing chromium and chromium-driver from Debian's packages" >&2
  # Another apt (a CI step, unattended upgrades) may hold the lock: wait for it, up to 5 minutes.
  apt_get() { DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 "$@"; }
  (apt_get update -qq && apt_get install -y -qq chromium chromium-driver >/dev/null) >&2 || true
fi
if ! present || ! "$chromedriver" --version >/dev/null 2>&1; then
  if [ "${CI:-}" = "true" ]; then
    echo "tests/browser.sh: no Chromium and ChromeDriver ($chromium, $chromedriver) available" >&2
    exit 1
  fi
  echo "tests/browser.sh: no Chromium and ChromeDriver; browser tests will be skipped" >&2
  exec "$@"
fi

export ATELIER_TEST_CHROMIUM="$chromium"
export ATELIER_TEST_CHROMEDRIVER="$chromedriver"
# Selenium Manager stays offline even if something ever asks it for a driver.
export SE_OFFLINE=true SE_AVOID_STATS=true
exec "$@"
