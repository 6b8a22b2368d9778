#!/usr/bin/env escript
%% Writes term_to_binary blobs of tricky terms for term's Go tests.
%%
%%   escript cases.escript OUTDIR
%%
%% For every case NAME it writes OUTDIR/v1/NAME.etf (term_to_binary/1, i.e.
%% minor_version 1 on OTP 25), OUTDIR/v2/NAME.etf (minor_version 2, OTP 26's
%% default), OUTDIR/v0/NAME.etf (minor_version 0) and OUTDIR/z/NAME.etf
%% (compressed). The Go test decodes and re-encodes them and hands its
%% output to check.escript.
-mode(compile).

main([Dir]) ->
    Variants = [{"v1", []}, {"v2", [{minor_version, 2}]}, {"v0", [{minor_version, 0}]},
                {"z", [compressed]}],
    [ok = filelib:ensure_dir(filename:join([Dir, V, "x"])) || {V, _} <- Variants],
    Cases = cases(),
    [ok = file:write_file(filename:join([Dir, V, Name ++ ".etf"]), term_to_binary(T, Opts))
     || {Name, T} <- Cases, {V, Opts} <- Variants],
    io:format("wrote ~b cases~n", [length(Cases)]).

cases() ->
    Self = self(),
    Ref = make_ref(),
    Port = hd(erlang:ports()),
    Free = <<"captured">>,
    Closure = fun(X) -> {X, Free} end,
    OneMB = binary:copy(list_to_binary(lists:seq(0, 255)), 4096),
    Utf8Id = <<"séance-ü-日本"/utf8>>,
    [%% integers
     {"int_0", 0}, {"int_255", 255}, {"int_256", 256}, {"int_neg1", -1},
     {"int32_max", 2147483647}, {"int32_min", -2147483648},
     {"int32_max_plus1", 2147483648}, {"int32_min_minus1", -2147483649},
     {"int64_max", 9223372036854775807}, {"int64_min", -9223372036854775808},
     {"int64_max_plus1", 9223372036854775808}, {"int64_min_minus1", -9223372036854775809},
     {"big_2_64", 1 bsl 64}, {"big_neg_2_200", -(1 bsl 200)},
     {"big_2_2040", 1 bsl 2040}, {"large_big_2_2048", 1 bsl 2048},
     {"large_big_neg_2_5000", -(1 bsl 5000) + 12345},
     %% floats
     {"float_0_1", 0.1}, {"float_neg_zero", -0.0}, {"float_zero", 0.0},
     {"float_1e300", 1.0e300}, {"float_1", 1.0}, {"float_neg_1_5", -1.5},
     {"float_denorm_min", 5.0e-324}, {"float_max", 1.7976931348623157e308},
     {"float_norm_min", 2.2250738585072014e-308}, {"float_misc", 123456.789},
     {"float_neg_tiny", -1.0e-300},
     %% atoms
     {"atom_abc", abc}, {"atom_empty", ''}, {"atom_space", 'hello world'},
     {"atom_latin1", 'séance'}, {"atom_utf8", '日本'}, {"atom_mixed_utf8", 'ü-日本-ok'},
     {"atom_true", true}, {"atom_infinity", infinity},
     {"atom_latin1_255", list_to_atom(lists:duplicate(255, $a))},
     {"atom_latin1_255_high", list_to_atom(lists:duplicate(255, 255))},
     {"atom_utf8_255_chars", list_to_atom(lists:duplicate(255, 16#65E5))},
     {"atom_utf8_128_chars_2byte", list_to_atom(lists:duplicate(128, 16#0101))},
     %% binaries and bitstrings
     {"bin_empty", <<>>}, {"bin_abc", <<"abc">>}, {"bin_utf8", Utf8Id},
     {"bin_1mb", OneMB}, {"bin_zeros", <<0, 0, 0>>},
     {"bits_1", <<1:1>>}, {"bits_5", <<1, 2, 3:5>>}, {"bits_7", <<127:7>>},
     %% tuples
     {"tuple_empty", {}}, {"tuple_pair", {a, <<"b">>}},
     {"tuple_300", list_to_tuple(lists:seq(1, 300))},
     {"tuple_nested", {a, {b, {c, {d, []}}}}},
     %% lists
     {"nil", []}, {"string_abc", "abc"}, {"improper_1_2_3", [1, 2 | 3]},
     {"improper_atoms", [a | b]}, {"improper_string_bin", ["a" | <<"b">>]},
     {"list_256", [256]}, {"list_neg", [-1]}, {"list_mixed", [1.0, a, <<>>, "x", {}]},
     {"list_unicode_chars", "日本"}, {"list_nested_nil", [[]]},
     {"string_65535", lists:duplicate(65535, $z)},
     {"list_65536_small", lists:duplicate(65536, 7)},
     {"list_70000_small", [X rem 256 || X <- lists:seq(1, 70000)]},
     {"list_deep_500", lists:foldl(fun(_, A) -> [A] end, [], lists:seq(1, 500))},
     {"tuple_deep_500", lists:foldl(fun(I, A) -> {I, A} end, x, lists:seq(1, 500))},
     %% maps
     {"map_empty", #{}}, {"map_one", #{a => 1}},
     {"map_mixed_keys", #{b => 1, a => 2, 1.0 => x, 1 => y, <<"z">> => 1, {t} => 2, [l] => 3,
                          2 => z, -1 => q, 0.5 => r, -(1 bsl 70) => s, (1 bsl 70) => t,
                          -2.0 => u, 'é' => v, [] => w, "a" => x, [1 | 2] => y,
                          #{} => z, {} => a, <<1:1>> => b, <<0>> => c}},
     {"map_binary_keys", #{<<"user">> => <<"alice">>, <<"client">> => <<"claude">>,
                           <<"n">> => 3}},
     {"map_tuple_keys", #{{a, 1} => one, {a, 2} => two, {b} => three}},
     {"map_key_map", #{#{k => v} => 1, #{} => 2}},
     {"map_32", maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 32)])},
     {"map_33", maps:from_list([{integer_to_binary(I), I} || I <- lists:seq(1, 33)])},
     {"map_100_atoms", maps:from_list([{list_to_atom("k" ++ integer_to_list(I)), I}
                                       || I <- lists:seq(1, 100)])},
     {"map_1000", maps:from_list([{I, <<I:32>>} || I <- lists:seq(1, 1000)])},
     {"map_deep_100", lists:foldl(fun(I, A) -> #{level => I, child => A} end, #{},
                                  lists:seq(1, 100))},
     %% pids, references, ports, funs
     {"pid_self", Self}, {"ref", Ref}, {"port", Port},
     {"pid_ref_tuple", {Self, Ref, Port}},
     {"map_pid_ref_keys", #{Self => 1, Ref => 2, Port => 3}},
     {"pid_remote", binary_to_term(<<131, 88, 100, 0, 8, "a@remote", 0, 0, 0, 42, 0, 0, 0, 1,
                                     0, 0, 0, 7>>)},
     {"ref_remote_5", binary_to_term(<<131, 90, 0, 5, 100, 0, 8, "a@remote", 0, 0, 0, 3,
                                       1:32, 2:32, 3:32, 4:32, 5:32>>)},
     {"port_v4", binary_to_term(<<131, 120, 100, 0, 8, "a@remote", 1:32, 2:32, 9:32>>)},
     {"export", fun erlang:node/0}, {"export_utf8", fun 'mødule':'fün'/2},
     {"closure", Closure}, {"closure_key", #{Closure => 1, fun lists:map/2 => 2}},
     %% session values as erlmcp stores them
     {"session_utf8_infinity",
      #{id => Utf8Id, created_at => 1700000000000, last_accessed => 1700000005000,
        timeout_ms => infinity,
        metadata => #{<<"user">> => <<"alice">>, user => atom_key, {tuple, key} => [1, 2, 3],
                      <<"scores">> => [0.1, -0.0, 1.0e300]}}},
     {"session_hex",
      #{id => <<"0123456789ABCDEF0123456789ABCDEF">>, created_at => 1700000000000,
        last_accessed => 1700000000000, timeout_ms => 1800000, metadata => #{}}},
     {"session_big_metadata",
      #{id => <<"BIG">>, created_at => 1, last_accessed => 2, timeout_ms => 3,
        metadata => #{<<"blob">> => OneMB, <<"big">> => 1 bsl 64}}}].
