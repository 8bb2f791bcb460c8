//! `intake watch`.

use anyhow::{Result, bail};

use super::Exit;
use super::args::{Cli, WatchArgs};

pub fn watch(_cli: &Cli, _a: &WatchArgs) -> Result<Exit> {
    bail!("intake watch is not available in this build")
}
