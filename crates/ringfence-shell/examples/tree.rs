//! Prints the syntax tree of a shell string (for working on the analyser).
fn main() {
    let src = std::env::args().nth(1).unwrap_or_default();
    let mut p = tree_sitter::Parser::new();
    if p.set_language(&tree_sitter_bash::LANGUAGE.into()).is_err() {
        return;
    }
    if let Some(t) = p.parse(&src, None) {
        print(t.root_node(), &src, 0);
    }
}
fn print(n: tree_sitter::Node, src: &str, d: usize) {
    let text = &src[n.byte_range()];
    let field = "";
    println!("{:w$}{}{} {:?}", "", field, n.kind(), if n.child_count() == 0 || text.len() < 40 { text } else { "" }, w = d * 2);
    let mut c = n.walk();
    for (i, ch) in n.children(&mut c).enumerate() {
        if let Some(f) = n.field_name_for_child(i as u32) { print!("{:w$}[{f}]\n", "", w = d * 2 + 2); }
        print(ch, src, d + 1);
    }
}
