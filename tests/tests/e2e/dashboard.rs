//! The health dashboard in a real browser (headless Chromium over the DevTools
//! protocol), served by the daemon itself:
//! - a tenant's token sees that tenant's integrations and nothing of another's, an
//!   operator's monitoring token sees every tenant;
//! - an integration that starts failing, and its firing alert, appear within one
//!   refresh of the daemon knowing it;
//! - HTML and script in error texts and configuration values are shown as text;
//! - the page asks nothing but the daemon, keeps the token out of URLs and cookies,
//!   and is served with a strict Content-Security-Policy;
//! - it is usable by keyboard, at a phone's width and in dark mode;
//! - screenshots land in `target/screenshots/` for a person to look at.

use std::time::Duration;

use e2e_tests::browser::{Page, screenshot_dir};
use e2e_tests::{DaemonSetup, PluginPackage, World, http, wait_for};
use serde_json::Value;

const LONG: Duration = Duration::from_secs(30);
/// The page's refresh interval (app.js `REFRESH_MS`) and some slack for a debug daemon.
const ONE_REFRESH: Duration = Duration::from_secs(9);

/// What the failing integration's error and configuration say: markup that would run
/// if the page ever treated text as HTML.
const HOSTILE_ERROR: &str = "<script>window.pwned='script'</script><img src=x onerror=\"window.pwned='img'\"> token expired";
const HOSTILE_REPOSITORY: &str = "<img src=x onerror=\"window.pwned='config'\">org/repo";

/// Signs in on the page at `addr` by typing `token` and pressing Enter, and waits for
/// the first view.
pub(crate) fn sign_in(page: &mut Page, addr: &str, token: &str) {
    page.goto(&format!("http://{addr}/"));
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('signin').hidden",
        LONG,
    );
    page.eval("document.getElementById('token').focus()");
    page.type_text(token);
    page.press("Enter", false);
    page.wait_for(
        "the first view after signing in",
        "document.body.dataset.rendered >= 1",
        LONG,
    );
}

/// The page's visible text.
fn text(page: &mut Page) -> String {
    page.eval("document.body.innerText")
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// The rows of the table under the heading that starts with `title`, each as its
/// cells' text.
fn section_rows(page: &mut Page, title: &str) -> Vec<Vec<String>> {
    let rows = page.eval(&format!(
        "(() => {{ const h = [...document.querySelectorAll('#view h2')]\
           .find(e => e.textContent.startsWith({title})); \
           const table = h && h.nextElementSibling; \
           return table ? [...table.querySelectorAll('tbody tr')]\
             .map(r => [...r.cells].map(c => c.innerText.trim())) : []; }})()",
        title = Value::String(title.to_owned())
    ));
    serde_json::from_value(rows).expect("rows of cells")
}

/// The number of the page's latest request for its view (its refreshes count up).
fn requested(page: &mut Page) -> u64 {
    page.eval("Number(document.body.dataset.requested || 0)")
        .as_u64()
        .unwrap_or(0)
}

fn health(addr: &str, token: &str) -> Value {
    http::get_json(addr, "/v1/health", token).1
}

#[test]
fn the_dashboard_shows_each_token_its_tenants_live_escaped_and_from_the_daemon_alone() {
    let marker = tempfile::tempdir().expect("tempdir");
    let failing = marker.path().join("refuse");
    let world = World::new();
    world.install(&PluginPackage::collector(
        "puller",
        &[
            "--emit",
            "3",
            "--collect-error-file",
            failing.to_str().expect("utf8"),
        ],
    ));
    // globex's integration sends every second event invalid: dead letters to list.
    world.install(&PluginPackage::collector(
        "sloppy",
        &["--emit", "4", "--invalid-every", "2"],
    ));
    let daemon = world.start(
        &DaemonSetup::default()
            .with_master_key(&world.root.path().join("master.key"))
            .process("collect_interval = \"300ms\"")
            .extra(
                "[health]\ndisable_after = 0\ncollect_backoff_max = \"1s\"\n\
                 [alerts]\nevaluate_interval = \"100ms\"\npending_for = \"0s\"\n",
            ),
    );
    for tenant in ["acme", "globex"] {
        daemon.ctl_json(&["tenants", "create", tenant]);
    }
    daemon.add_integration(
        &world,
        "acme",
        "orders",
        "puller",
        &serde_json::json!({"repositories": ["acme/orders"]}),
    );
    daemon.add_integration(&world, "acme", "billing", "puller", &serde_json::json!({}));
    daemon.add_integration(
        &world,
        "globex",
        "secret-project",
        "sloppy",
        &serde_json::json!({}),
    );
    // A second version whose value is markup: the history shows it as text.
    let update = world.root.path().join("orders-v2.json");
    std::fs::write(
        &update,
        serde_json::json!({"repositories": [HOSTILE_REPOSITORY]}).to_string(),
    )
    .expect("config");
    let updated = daemon.ctl(&[
        "integrations",
        "update",
        "--tenant",
        "acme",
        "orders",
        "--config",
        update.to_str().expect("utf8"),
    ]);
    assert!(
        updated.status.success(),
        "{}",
        String::from_utf8_lossy(&updated.stderr)
    );
    let token = |args: &[&str]| {
        daemon.ctl_json(args)["token"]
            .as_str()
            .expect("token")
            .to_owned()
    };
    let acme = token(&["tokens", "create", "--tenant", "acme", "--scope", "monitor"]);
    let operator = token(&["tokens", "create", "--scope", "monitor", "--all-tenants"]);
    let addr = daemon.http_addr();
    wait_for("every integration healthy", LONG, || {
        let doc = health(&addr, &operator);
        let states: Vec<&Value> = doc["integrations"]
            .as_array()?
            .iter()
            .map(|i| &i["state"])
            .collect();
        (states.len() == 3 && states.iter().all(|s| *s == "healthy")).then_some(())
    });

    // The page and its assets carry the security headers.
    for path in ["/", "/ui/integrations/acme/orders", "/ui/assets/app.js"] {
        let response =
            http::request(&addr, "GET", path, &[], b"", http::Framing::Length).expect("GET page");
        assert_eq!(response.status, 200, "{path}");
        let policy = response.header("content-security-policy").expect("CSP");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "connect-src 'self'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(directive), "{path}: {policy}");
        }
        assert!(!policy.contains("unsafe-inline"), "{policy}");
        assert_eq!(response.header("x-frame-options").as_deref(), Some("DENY"));
        assert_eq!(
            response.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }

    // The page's data: another tenant's integration is refused exactly as one of a
    // tenant that does not exist; a missing integration of its own is 404; dead
    // letters come without their payloads.
    let refused = http::get_json(&addr, "/v1/integrations/globex/secret-project", &acme);
    assert_eq!(refused.0, 403);
    assert_eq!(
        refused,
        http::get_json(&addr, "/v1/integrations/nobody/nothing", &acme)
    );
    assert_eq!(
        http::get_json(&addr, "/v1/deployments?tenant=globex", &acme).0,
        403
    );
    let missing = http::get_json(&addr, "/v1/integrations/acme/nothing", &acme);
    assert_eq!(missing.0, 404, "{}", missing.1);
    assert_eq!(
        http::get_json(&addr, "/v1/integrations/acme/orders", "bl_wrong").0,
        401
    );
    let sloppy = wait_for("globex's dead letters", LONG, || {
        let (code, page) =
            http::get_json(&addr, "/v1/integrations/globex/secret-project", &operator);
        assert_eq!(code, 200, "{page}");
        (page["dead_letters_total"].as_u64() >= Some(1)).then_some(page)
    });
    // A tenant's admin token reads its own tenant's page too.
    let globex_admin = token(&["tokens", "create", "--tenant", "globex", "--scope", "admin"]);
    let (code, own) = http::get_json(
        &addr,
        "/v1/integrations/globex/secret-project",
        &globex_admin,
    );
    assert_eq!(code, 200, "{own}");
    assert_eq!(own["health"]["plugin"], "sloppy");
    let letter = sloppy["dead_letters"][0]
        .as_object()
        .expect("a dead letter");
    let mut fields: Vec<&str> = letter.keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        ["at", "id", "reason", "stage"],
        "no payload: {letter:?}"
    );

    // A tenant's token: its own integrations, nothing of globex's.
    let mut page = Page::launch(1440, 900);
    sign_in(&mut page, &addr, &acme);
    page.wait_for(
        "acme's two integrations",
        "document.querySelectorAll('tbody tr').length === 2",
        LONG,
    );
    let shown = text(&mut page);
    assert!(
        shown.contains("orders") && shown.contains("billing"),
        "{shown}"
    );
    assert!(
        !shown.contains("globex") && !shown.contains("secret-project"),
        "{shown}"
    );
    assert_eq!(
        page.eval("document.getElementById('filter-tenant') === null"),
        Value::Bool(true),
        "no tenant filter for one tenant"
    );

    // It starts failing; the daemon knows first, the page follows within one refresh.
    std::fs::write(&failing, format!("auth\n{HOSTILE_ERROR}")).expect("fail");
    wait_for("the daemon sees the failure and fires", LONG, || {
        let doc = health(&addr, &acme);
        let orders = doc["integrations"]
            .as_array()?
            .iter()
            .find(|i| i["integration"] == "orders")?
            .clone();
        let firing = doc["alerts"]
            .as_array()?
            .iter()
            .any(|a| a["integration"] == "orders");
        (orders["state"] == "action_required" && firing).then_some(())
    });
    // A refresh may be in flight with what the daemon said just before; the next one
    // to start must show it.
    let asked = requested(&mut page);
    page.wait_for(
        "the failing integration and its alert on the page",
        "document.querySelector('tbody tr .s-action_required') \
         && document.querySelector('#firing li') \
         && document.querySelector('#firing').innerText.includes('orders')",
        ONE_REFRESH,
    );
    let shown_by = page
        .eval("Number(document.body.dataset.shown)")
        .as_u64()
        .unwrap_or(u64::MAX);
    assert!(
        shown_by <= asked + 1,
        "shown by request {shown_by}: the first refresh started after the daemon knew is {}",
        asked + 1
    );
    // Worst first: every failing row before the healthy ones (both of acme's
    // integrations run the plugin that now fails).
    let states = page.eval(
        "[...document.querySelectorAll('tbody tr td:first-child .badge')].map(b => b.className)",
    );
    assert_eq!(
        states,
        serde_json::json!(["badge s-action_required", "badge s-action_required"]),
        "{states}"
    );
    let shown = text(&mut page);
    assert!(
        shown.contains("<script>window.pwned='script'</script>"),
        "the error is shown as text: {shown}"
    );
    std::fs::create_dir_all(screenshot_dir()).expect("screenshots");
    page.screenshot(&screenshot_dir().join("dashboard-overview.png"));

    // Keyboard: Tab from the top reaches the filters and the failing integration's link,
    // and Enter follows it.
    // Tab from the top of a freshly loaded page (the tab keeps the token).
    page.reload();
    page.wait_for(
        "the overview after a reload",
        "document.querySelectorAll('tbody tr td:first-child .s-action_required').length === 2",
        LONG,
    );
    let mut reached = Vec::new();
    for _ in 0..40 {
        page.press("Tab", false);
        let focused = page.eval(
            "(() => { const e = document.activeElement; \
              const where = e && e.closest('tbody') ? 'row ' : ''; \
              return e ? `${where}${e.tagName.toLowerCase()}:${e.id || e.getAttribute('href') || e.textContent.trim()}` : ''; })()",
        );
        let focused = focused.as_str().unwrap_or_default().to_owned();
        let done = focused == "row a:/ui/integrations/acme/orders";
        reached.push(focused);
        if done {
            break;
        }
    }
    assert_eq!(
        reached[0], "a:#main",
        "the skip link comes first: {reached:?}"
    );
    assert!(
        reached.iter().any(|f| f == "select:filter-state"),
        "{reached:?}"
    );
    assert_eq!(
        reached.last().map(String::as_str),
        Some("row a:/ui/integrations/acme/orders"),
        "{reached:?}"
    );
    page.press("Enter", false);
    page.wait_for(
        "the integration's page",
        "location.pathname === '/ui/integrations/acme/orders' && document.querySelector('#view h1').innerText === 'acme / orders'",
        LONG,
    );
    page.wait_for(
        "its errors, alerts and history",
        "document.body.innerText.includes('Recent errors') && document.body.innerText.includes('v2')",
        LONG,
    );
    let errors = section_rows(&mut page, "Recent errors");
    assert!(!errors.is_empty());
    for row in &errors {
        assert_eq!(
            (row[1].as_str(), row[2].as_str()),
            ("auth", "collect"),
            "{row:?}"
        );
        assert!(
            row[3].contains("<script>window.pwned='script'</script>"),
            "the error's markup as text: {row:?}"
        );
    }
    let alerts = section_rows(&mut page, "Alerts");
    assert!(
        alerts
            .iter()
            .any(|a| a[0] == "firing" && a[2] == "integration_action_required"),
        "its firing alert: {alerts:?}"
    );
    let history = section_rows(&mut page, "Configuration history");
    assert_eq!(history.len(), 2, "{history:?}");
    assert_eq!(history[0][0], "v2");
    assert!(
        history[0][3].starts_with("update")
            && history[0][3].contains("onerror=\\\"window.pwned='config'\\\">org/repo"),
        "the change, its value as text (in the diff's JSON): {history:?}"
    );
    assert_eq!(history[1][0], "v1");
    assert!(history[1][3].starts_with("add"), "{history:?}");
    page.screenshot(&screenshot_dir().join("dashboard-integration.png"));
    // Nothing of the markup ran or became an element.
    assert_eq!(page.eval("window.pwned === undefined"), Value::Bool(true));
    assert_eq!(
        page.eval("document.querySelectorAll('img, iframe, object, embed').length"),
        0
    );
    assert_eq!(page.eval("document.scripts.length"), 1);

    // A phone's width and dark mode: nothing wider than the screen, dark colours.
    page.goto(&format!("http://{addr}/ui/"));
    page.wait_for(
        "the overview again (the tab keeps the token)",
        "document.querySelectorAll('tbody tr').length === 2",
        LONG,
    );
    page.resize(390, 844, true);
    page.color_scheme("dark");
    page.wait_for(
        "the phone layout",
        "document.documentElement.scrollWidth <= window.innerWidth + 1",
        LONG,
    );
    let background = page.eval("getComputedStyle(document.body).backgroundColor");
    assert_eq!(background, "rgb(13, 17, 23)", "dark background");
    page.screenshot(&screenshot_dir().join("dashboard-phone-dark.png"));
    page.resize(1440, 900, false);
    page.color_scheme("light");

    // The token: in the tab's session storage only, never in a URL or a cookie, and
    // every request went to the daemon.
    assert_eq!(page.eval("document.cookie"), "");
    let urls = page.requested_urls();
    assert!(urls.len() >= 6, "{urls:?}");
    for url in &urls {
        assert!(url.starts_with(&format!("http://{addr}/")), "{url}");
        assert!(!url.contains(&acme), "the token is in {url}");
    }
    assert!(urls.iter().any(|u| u.ends_with("/v1/health")), "{urls:?}");
    // The health document came compressed (the browser asks for gzip) and was drawn.
    assert_eq!(
        page.response_header("/v1/health", "content-encoding")
            .as_deref(),
        Some("gzip")
    );

    // Signing out forgets the token; the operator's token sees both tenants.
    page.eval("document.getElementById('signout').click()");
    page.wait_for(
        "the sign-in form",
        "!document.getElementById('signin').hidden",
        LONG,
    );
    assert_eq!(page.eval("sessionStorage.length"), 0);
    page.eval("document.getElementById('token').focus()");
    page.type_text(&operator);
    page.press("Enter", false);
    page.wait_for(
        "every tenant's integrations",
        "document.querySelectorAll('tbody tr').length === 3",
        LONG,
    );
    let all = text(&mut page);
    assert!(
        all.contains("globex") && all.contains("secret-project"),
        "{all}"
    );
    page.eval(
        "(() => { const s = document.getElementById('filter-tenant'); s.value = 'globex'; \
          s.dispatchEvent(new Event('change')); })()",
    );
    page.wait_for(
        "the tenant filter",
        "document.querySelectorAll('tbody tr').length === 1",
        LONG,
    );
    assert_eq!(
        page.eval("location.search"),
        "?tenant=globex",
        "the filter is in the address, to share"
    );
    page.eval("document.querySelector('tbody a').click()");
    page.wait_for(
        "globex's dead letters listed",
        "document.body.innerText.includes('Dead letters (') && document.querySelectorAll('td.mono').length >= 1",
        LONG,
    );

    // A bad token is refused on the sign-in form, with the daemon's reason.
    page.eval("document.getElementById('signout').click()");
    page.eval("document.getElementById('token').focus()");
    page.type_text("bl_not-a-token");
    page.press("Enter", false);
    let refused = page.wait_for(
        "the refusal",
        "!document.getElementById('signin-error').hidden && document.getElementById('signin-error').innerText",
        LONG,
    );
    assert!(
        refused.as_str().is_some_and(|t| t.contains("not valid")),
        "{refused}"
    );
}
