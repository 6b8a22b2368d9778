#!/usr/bin/env escript
%% Session fixtures from, and checks by, the real VM, for session's Go tests.
%%
%%   escript sessions.escript DIR NOW_MS
%%
%% 1. Writes DIR/erl/NAME.etf: sessions built the way erlmcp builds them,
%%    and values that are not sessions (the Go test knows what each holds).
%% 2. Checks every DIR/go/NAME.etf (written by Go's Generate): the VM must
%%    decode it to a map erlmcp accepts, term_to_binary must give the same
%%    bytes back, and erlmcp's expiry rule is evaluated at NOW_MS. Prints
%%    "ok NAME SIZE EXPIRED" or "FAIL NAME reason".
-mode(compile).

main([Dir, NowArg]) ->
    Now = list_to_integer(NowArg),
    Out = filename:join(Dir, "erl"),
    ok = filelib:ensure_dir(filename:join(Out, "x")),
    [ok = file:write_file(filename:join(Out, Name ++ ".etf"), Bin) || {Name, Bin} <- fixtures()],
    GoDir = filename:join(Dir, "go"),
    {ok, Files} = file:list_dir(GoDir),
    [check(filename:join(GoDir, F), Now) || F <- lists:sort(Files)],
    ok.

%% erlmcp_session_manager:create_session/2 builds this map.
new_session(Id, Now, Timeout, Meta) ->
    #{id => Id, created_at => Now, last_accessed => Now, timeout_ms => Timeout,
      metadata => Meta}.

fixtures() ->
    T0 = 1700000000000,
    Hex = <<"0123456789ABCDEF0123456789ABCDEF">>,
    Utf8 = <<"séance-ü-日本"/utf8>>,
    Meta = #{<<"client">> => <<"claude">>, <<"capabilities">> => [<<"tools">>, <<"prompts">>],
             user => <<"atom key">>, {tuple, key} => 1.5, <<"nested">> => #{<<"a">> => [1, 2 | 3]}},
    Touched = (new_session(Hex, T0, 1800000, Meta))#{last_accessed := T0 + 5000},
    Big = new_session(<<"BIG">>, T0, 60000, #{<<"blob">> => binary:copy(<<"x">>, 1 bsl 20)}),
    Many = new_session(<<"MANY">>, T0, 60000,
                       maps:from_list([{list_to_atom("k" ++ integer_to_list(I)), I}
                                       || I <- lists:seq(1, 40)])),
    S = fun term_to_binary/1,
    [{"hex_touched", S(Touched)},
     {"utf8_infinity", S(new_session(Utf8, T0, infinity, #{}))},
     {"nonutf8_id", S(new_session(<<255, 0, 1>>, T0, 1, #{}))},
     {"big_metadata", S(Big)},
     {"many_atom_keys", S(Many)},
     {"compressed", term_to_binary(Touched, [compressed])},
     {"minor_version_2", term_to_binary(Touched, [{minor_version, 2}])},
     {"extra_key", S(Touched#{owner => self()})},
     %% Not sessions.
     {"ets_row", S({Hex, Touched})},
     {"mnesia_record", S({erlmcp_session, Hex, Touched, T0})},
     {"missing_id", S(maps:remove(id, Touched))},
     {"binary_keys", S(#{<<"id">> => Hex, <<"created_at">> => T0})},
     {"atom_id", S(Touched#{id := some_atom})},
     {"float_created", S(Touched#{created_at := 1.0e12})},
     {"timeout_forever", S(Touched#{timeout_ms := forever})},
     {"metadata_list", S(Touched#{metadata := []})},
     {"huge_last_accessed", S(Touched#{last_accessed := 1 bsl 70})},
     {"not_etf", <<"{\"id\": \"json\"}">>}].

check(File, Now) ->
    Name = filename:basename(File, ".etf"),
    {ok, B} = file:read_file(File),
    try binary_to_term(B) of
        #{id := Id, created_at := C, last_accessed := L, timeout_ms := T, metadata := M} = S
          when is_binary(Id), is_integer(C), is_integer(L), is_map(M),
               T =:= infinity orelse (is_integer(T) andalso T > 0),
               map_size(S) =:= 5 ->
            case term_to_binary(S) of
                B -> io:format("ok ~s ~b ~p~n", [Name, byte_size(B), expired(S, Now)]);
                _ -> io:format("FAIL ~s term_to_binary gives different bytes~n", [Name])
            end;
        Other ->
            io:format("FAIL ~s not an erlmcp session: ~P~n", [Name, Other, 10])
    catch
        C:E -> io:format("FAIL ~s binary_to_term raised ~p:~p~n", [Name, C, E])
    end.

%% erlmcp's rule (erlmcp_session_ets:cleanup_expired/1 and friends).
expired(#{timeout_ms := infinity}, _Now) -> false;
expired(#{last_accessed := L, timeout_ms := T}, Now) -> Now - L > T.
