//! featurestream server binary.

fn main() {
    eprintln!("featurestream: the server arrives with issue 4");
}
