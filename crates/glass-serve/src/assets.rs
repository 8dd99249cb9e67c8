//! The pages' files, embedded in the binary so `glass serve` needs neither network nor
//! Node at run time. uPlot comes from npm (`npm pack uplot@1.6.32`), unmodified; its
//! version and sha256 are pinned here and checked by a test (how to update: docs/serve.md).

/// uPlot's npm version.
pub const UPLOT_VERSION: &str = "1.6.32";
/// sha256 of `uplot-1.6.32.tgz` as npm served it.
pub const UPLOT_TGZ_SHA256: &str =
    "4b8a8191e425658e3ea8c8c1314b0fc679c861ee3a1af2b20c7b16ba50b5133d";
/// sha256 of `package/dist/uPlot.iife.min.js`.
pub const UPLOT_JS_SHA256: &str =
    "19c8d4c6ad88929a79f4ae49d6f7161566dfd0ba3d15cc495e974f787eb78f1f";
/// sha256 of `package/dist/uPlot.min.css`.
pub const UPLOT_CSS_SHA256: &str =
    "df630c6a8d6f8eeaff264b50f73ce5b114f646ffd9a0bb74f049b0a00135fa04";
/// sha256 of `package/LICENSE` (MIT).
pub const UPLOT_LICENSE_SHA256: &str =
    "8f989229699b4fe2f1a0432d0e9edc338a8a911e250e2d1b01ecd770a5f5b1bd";

/// One embedded file.
pub struct Asset {
    /// Its name under `/assets/`.
    pub name: &'static str,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The bytes.
    pub bytes: &'static [u8],
}

/// Every file under `/assets/`: a request for any other name is a 404.
pub const ASSETS: &[Asset] = &[
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/uPlot.min.css"),
    },
    Asset {
        name: "uPlot.LICENSE",
        content_type: "text/plain; charset=utf-8",
        bytes: include_bytes!("../assets/uPlot.LICENSE"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        bytes: include_bytes!("../assets/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        bytes: include_bytes!("../assets/app.css"),
    },
];

/// The index page (list of runs, branches under their checkpoints).
pub const INDEX_HTML: &str = include_str!("../assets/index.html");
/// A run's page (curves, evaluations, checkpoints, data, trace).
pub const RUN_HTML: &str = include_str!("../assets/run.html");

/// The embedded file called `name`, if any (exact match against [`ASSETS`]).
pub fn get(name: &str) -> Option<&'static Asset> {
    ASSETS.iter().find(|a| a.name == name)
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    #[test]
    fn uplot_files_are_the_pinned_ones() {
        let sha = |name: &str| hex::encode(Sha256::digest(get(name).unwrap().bytes));
        assert_eq!(sha("uPlot.iife.min.js"), UPLOT_JS_SHA256);
        assert_eq!(sha("uPlot.min.css"), UPLOT_CSS_SHA256);
        assert_eq!(sha("uPlot.LICENSE"), UPLOT_LICENSE_SHA256);
        assert!(
            String::from_utf8_lossy(get("uPlot.iife.min.js").unwrap().bytes)
                .contains(UPLOT_VERSION)
        );
    }
}
