//! `eventor-agent`: runs on a cluster host and executes the steps the prime coordinator sends it.
//!
//! The cluster issue fills this in; for now it only reports the protocol version it speaks.

fn main() -> anyhow::Result<()> {
    println!("eventor-agent {}", env!("CARGO_PKG_VERSION"));
    Ok(())
}
