use std::{env, fs, path::PathBuf};

fn main() {
    // Put the linker script on the linker search path (`-Tlink.ld` in .cargo/config.toml).
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap());
    fs::copy("link.ld", out.join("link.ld")).unwrap();
    println!("cargo:rustc-link-search={}", out.display());
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
