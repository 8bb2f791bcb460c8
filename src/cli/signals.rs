//! SIGINT and SIGTERM for the long-running commands: the first asks for a
//! graceful stop, a second exits at once.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{Signal, SignalKind, signal};

/// Signal handlers, installed before the work starts so that a signal
/// during start-up is not lost.
pub struct Signals {
    rt: tokio::runtime::Runtime,
    int: Signal,
    term: Signal,
}

impl Signals {
    /// Installs the handlers.
    pub fn new() -> Result<Signals> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot set up signal handling")?;
        let (int, term) = rt
            .block_on(async {
                Ok::<_, std::io::Error>((
                    signal(SignalKind::interrupt())?,
                    signal(SignalKind::terminate())?,
                ))
            })
            .context("cannot set up signal handling")?;
        Ok(Signals { rt, int, term })
    }

    /// On the first SIGINT or SIGTERM, calls `stop` (which should stop
    /// admitting work and let what is in flight finish); a second signal
    /// exits at once with 128 + its number. With `grace`, the process exits
    /// 0 anyway once that much time has passed after the first.
    pub fn spawn(
        self,
        stop: impl FnOnce() + Send + 'static,
        grace: Option<Duration>,
        dispatch: tracing::Dispatch,
    ) -> Result<()> {
        let Signals {
            rt,
            mut int,
            mut term,
        } = self;
        std::thread::Builder::new()
            .name("intake-signals".into())
            .spawn(move || {
                let _guard = tracing::dispatcher::set_default(&dispatch);
                rt.block_on(async move {
                    let name = tokio::select! {
                        _ = int.recv() => "SIGINT",
                        _ = term.recv() => "SIGTERM",
                    };
                    match grace {
                        Some(g) => tracing::info!(
                            "{name}: no new files; finishing the files in flight (at most {g:?}; send it again to stop at once)"
                        ),
                        None => tracing::warn!(
                            "{name}: no new files; finishing the files in flight (send it again to stop at once)"
                        ),
                    }
                    stop();
                    let wait = async {
                        match grace {
                            Some(g) => tokio::time::sleep(g).await,
                            None => std::future::pending::<()>().await,
                        }
                    };
                    let code = tokio::select! {
                        _ = int.recv() => 128 + libc::SIGINT,
                        _ = term.recv() => 128 + libc::SIGTERM,
                        _ = wait => {
                            tracing::warn!(
                                "the files in flight took longer than {:?}; stopping now (the next start picks up what was not committed)",
                                grace.unwrap_or_default()
                            );
                            0
                        }
                    };
                    std::process::exit(code);
                })
            })
            .context("cannot set up signal handling")?;
        Ok(())
    }
}
