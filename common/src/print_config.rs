//! The `--print-config` form both binaries print: one `ECHOVALUE_<NAME>=value` line a
//! setting, ready for an env file.

use std::fmt;

/// Writes one `ECHOVALUE_<name>=<value>` line for each pair.
pub fn lines(f: &mut fmt::Formatter<'_>, settings: &[(&str, &dyn fmt::Display)]) -> fmt::Result {
    for (name, value) in settings {
        writeln!(f, "ECHOVALUE_{name}={value}")?;
    }
    Ok(())
}
