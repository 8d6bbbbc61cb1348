mod jobs;
mod sim;
fn main() {}
