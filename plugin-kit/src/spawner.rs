//! Plugins are forked from one thread that lives as long as the host. A parent-death
//! signal (`PR_SET_PDEATHSIG`, which the host sets before exec and a plugin-kit plugin
//! sets again for itself) fires when the *thread* that forked the child exits, not the
//! process; tokio's blocking-pool threads, which `block_in_place` turns workers into,
//! exit after ten idle seconds, and would take every plugin they forked with them.

use std::sync::OnceLock;
use std::sync::mpsc;

type Job = Box<dyn FnOnce() + Send>;

fn spawner() -> std::io::Result<&'static mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    if let Some(sender) = SPAWNER.get() {
        return Ok(sender);
    }
    let (sender, jobs) = mpsc::channel::<Job>();
    // The thread is only ever started once: a racing caller's unused channel is dropped.
    if SPAWNER.set(sender).is_ok() {
        std::thread::Builder::new()
            .name("plugin-spawner".to_owned())
            .spawn(move || {
                for job in jobs {
                    job();
                }
            })?;
    }
    SPAWNER
        .get()
        .ok_or_else(|| std::io::Error::other("the plugin spawner did not start"))
}

/// `command.spawn()` on the spawner thread, registered with the caller's runtime.
pub(crate) async fn spawn(
    mut command: tokio::process::Command,
) -> std::io::Result<tokio::process::Child> {
    let runtime = tokio::runtime::Handle::current();
    let (done, spawned) = tokio::sync::oneshot::channel();
    spawner()?
        .send(Box::new(move || {
            let _entered = runtime.enter();
            let _ = done.send(command.spawn());
        }))
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?;
    spawned
        .await
        .map_err(|_| std::io::Error::other("the plugin spawner thread is gone"))?
}
