//! `leitner system`: the appliance image's system slots and updates. The
//! work is the image's (RAUC, the boot state, restarts), in a script that
//! ships with the image; this command is its door, so that the owner has
//! one command for everything.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::{Error, Outcome};

/// Where the image keeps the script (image/files/usr/lib/leitner-image).
const SCRIPT: &str = "/usr/lib/leitner-image/system";

pub(super) fn run(args: Vec<OsString>) -> Outcome {
    run_script(Path::new(SCRIPT), args)
}

fn run_script(script: &Path, args: Vec<OsString>) -> Outcome {
    if !script.exists() {
        return Err(Error::failed(
            "`leitner system` manages the leitner appliance image's system slots; \
             this leitner was installed as a package: update it with apt",
        ));
    }
    // exec: the script's output, exit code and restarts are the command's.
    let error = Command::new(script).args(args).exec();
    Err(Error::failed(format!("{}: {error}", script.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_the_image_it_says_what_to_do() {
        let missing = Path::new("/nonexistent/leitner-image/system");
        let error = run_script(missing, vec![]).unwrap_err();
        assert!(
            error.message.contains("update it with apt"),
            "{}",
            error.message
        );
        assert_eq!(error.code, 1);
    }
}
