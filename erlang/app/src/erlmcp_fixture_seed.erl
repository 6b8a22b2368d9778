%% @doc Fast, deterministic seeding of a session store with realistic
%% erlmcp-shaped sessions, for tests and demos.
%%
%% seed(Store, Opts, Count, Seed) writes Count sessions straight into the
%% store's table (not through the store server), in batches of 1000:
%%   ets     ets:insert of each batch into the named table (created, and
%%           kept by a small keeper process, if missing);
%%   dets    dets:insert of each batch; into the open named table if this
%%           node has it open (the store server's), otherwise the fixture
%%           opens the file itself with min_no_slots sized for Count and
%%           closes it at the end;
%%   mnesia  one transaction per batch with mnesia:write_lock_table; the
%%           table is created as erlmcp_session_mnesia:init/1 would if missing.
%% Options are the backend's (table_name, file_path, dets_dir, nodes, ...);
%% missing ones come from the application env when it configures the same
%% backend. Extra options: `now' (ms; fixes every timestamp, making the
%% output identical for a Seed), `batch' (rows per batch).
%%
%% Sessions: 32-character upper-case hex ids, about 1 % UTF-8 ids
%% (<<"séance-"/utf8, ...>> and others); 400-600 bytes each in
%% term_to_binary; timeouts from 30 min to 24 h, about 2 % `infinity';
%% last_accessed within the minute before `now', so nothing expires
%% during a test.
-module(erlmcp_fixture_seed).

-export([seed/4, session/2, sessions/3]).

-define(BATCH, 1000).

-spec seed(ets | dets | mnesia, map(), non_neg_integer(), term()) ->
          {ok, non_neg_integer()} | {error, term()}.
seed(Store, Opts0, Count, Seed) when is_integer(Count), Count >= 0 ->
    _ = rand:seed(exsss, Seed),
    Opts = with_env_defaults(Store, Opts0),
    Now = maps:get(now, Opts, erlang:system_time(millisecond)),
    Batch = maps:get(batch, Opts, ?BATCH),
    case writer(Store, Opts, Count) of
        {ok, Write, Close} ->
            try
                loop(Count, Batch, Now, Write, 0)
            after
                Close()
            end;
        {error, _} = E ->
            E
    end.

%% @doc The first Count sessions that seed/4 would write for Seed, as a
%% list (for small counts and tests).
sessions(Count, Seed, Now) ->
    _ = rand:seed(exsss, Seed),
    [session(Now, I) || I <- lists:seq(1, Count)].

loop(0, _Batch, _Now, _Write, N) ->
    {ok, N};
loop(Left, Batch, Now, Write, N) ->
    K = min(Left, Batch),
    Rows = [session(Now, N + I) || I <- lists:seq(1, K)],
    case Write(Rows) of
        ok -> loop(Left - K, Batch, Now, Write, N + K);
        {error, _} = E -> E
    end.

%%% Writers

writer(ets, Opts, _Count) ->
    T = maps:get(table_name, Opts, erlmcp_sessions_ets),
    ok = ensure_ets(T),
    {ok, fun(Rows) -> true = ets:insert(T, Rows), ok end, fun() -> ok end};
writer(dets, Opts, Count) ->
    {Name, File, OpenOpts} = erlmcp_session_dets:open_opts(Opts),
    Insert = fun(Rows) -> dets:insert(Name, Rows) end,
    case dets:info(Name, filename) of
        undefined ->
            ok = filelib:ensure_dir(File),
            %% Twice the rows in slots roughly halves insert time.
            Slots = [{min_no_slots, min(max(2 * Count, 256), 32000000)} |
                     lists:keydelete(min_no_slots, 1, OpenOpts)],
            case dets:open_file(Name, Slots) of
                {ok, Name} -> {ok, Insert, fun() -> dets:close(Name) end};
                {error, _} = E -> E
            end;
        _OpenFile ->
            {ok, Insert, fun() -> grown(Name) end}
    end;
writer(mnesia, Opts, Count) ->
    case mnesia:system_info(is_running) of
        yes -> mnesia_writer(Opts, Count);
        Other -> {error, {mnesia_not_running, node(), Other}}
    end.

%% grown(Name): the open file's hash table grown to its keys, as erlmcp's
%% one-session writes leave it. DETS grows its table (linear hashing) by
%% at most two segments of 256 slots a write, so after a load in batches
%% of 1,000 the file has about half as many slots as keys (300k keys:
%% 153,856 slots) and catches up later, a segment at a time between the
%% application's requests, once the table is next unfixed
%% (dets:check_growth): in migctl's big run that was ~100 s of re-hashing
%% right after the backfill's pass let go of the 1.8M-session file, with
%% client timeouts on that node, a cost a file erlmcp wrote itself does
%% not carry. A fix and an unfix start the catch-up here, and the seed
%% waits for it (3 s for 300k sessions on an idle node), or until the
%% slot count stops moving for a second.
grown(Name) ->
    ok = dets:safe_fixtable(Name, true),
    ok = dets:safe_fixtable(Name, false),
    grown(Name, 0, 0).

grown(Name, Prev, Still) ->
    Keys = dets:info(Name, no_keys),
    case dets:info(Name, no_slots) of
        {_, Cur, _} when is_integer(Keys), Cur < Keys, Still < 10 ->
            timer:sleep(100),
            grown(Name, Cur, case Cur of Prev -> Still + 1; _ -> 0 end);
        _ ->
            ok
    end.

mnesia_writer(Opts, _Count) ->
    T = maps:get(table_name, Opts, erlmcp_session),
    Ready = case lists:member(T, mnesia:system_info(tables)) of
                true -> mnesia:wait_for_tables([T], 30000);
                false -> element(1, erlmcp_session_mnesia:init(Opts))
            end,
    case Ready of
        ok ->
            Write = fun(Rows) ->
                            F = fun() ->
                                        ok = mnesia:write_lock_table(T),
                                        Now = erlang:system_time(millisecond),
                                        lists:foreach(
                                          fun({Id, S}) ->
                                                  ok = mnesia:write(T, {T, Id, S, Now}, write)
                                          end, Rows)
                                end,
                            case mnesia:transaction(F) of
                                {atomic, ok} -> ok;
                                {aborted, R} -> {error, R}
                            end
                    end,
            {ok, Write, fun() -> ok end};
        Other ->
            {error, {mnesia_table_not_ready, T, Other}}
    end.

%% An ETS table dies with its owner, and seed/4 is often run by a
%% short-lived rpc process: a missing table gets a keeper process.
ensure_ets(T) ->
    case ets:whereis(T) of
        undefined ->
            Parent = self(),
            Ref = make_ref(),
            _ = spawn(fun() ->
                              Res = try erlmcp_session_ets:init(#{table_name => T}), ok
                                    catch _:_ -> ok end,
                              Parent ! {Ref, Res},
                              receive stop -> ok end
                      end),
            receive {Ref, ok} -> ok end;
        _ ->
            ok
    end.

with_env_defaults(Store, Opts) ->
    {Backend, EnvOpts, _} = try erlmcp_session_store:config()
                            catch _:_ -> {none, #{}, 0} end,
    Mod = backend_module(Store),
    Defaults = case Backend of
                   Mod -> EnvOpts;
                   _ -> maps:with([dets_dir || Store =:= dets], EnvOpts)
               end,
    maps:merge(Defaults, Opts).

backend_module(ets) -> erlmcp_session_ets;
backend_module(dets) -> erlmcp_session_dets;
backend_module(mnesia) -> erlmcp_session_mnesia.

%%% Session generation (uses the process's rand state)

-define(TIMEOUTS, {1800000, 3600000, 7200000, 14400000, 28800000, 86400000}).

%% @doc One {Id, Session}; N only varies the content.
session(Now, N) ->
    Id = case rand:uniform(100) of
             1 -> utf8_id();
             _ -> hex(2)
         end,
    Timeout = case rand:uniform(50) of
                  1 -> infinity;
                  _ -> element(rand:uniform(tuple_size(?TIMEOUTS)), ?TIMEOUTS)
              end,
    LastAccessed = Now - rand:uniform(60000) + 1,
    Age = rand:uniform(case Timeout of infinity -> 86400000; _ -> Timeout div 2 end),
    Meta0 = metadata(N),
    S0 = #{id => Id,
           created_at => LastAccessed - Age,
           last_accessed => LastAccessed,
           timeout_ms => Timeout,
           metadata => Meta0},
    %% Pad to a uniformly chosen size between 400 and 600 bytes.
    Target = 404 + rand:uniform(192),
    Need = Target - erlang:external_size(S0) - 19,
    S = S0#{metadata => Meta0#{<<"notes">> => pad(max(Need, 0))}},
    {Id, S}.

utf8_id() ->
    Prefixes = {<<"séance-"/utf8>>, <<"сессия-"/utf8>>, <<"セッション-"/utf8>>,
                <<"会话-"/utf8>>, <<"sesión-"/utf8>>},
    P = element(rand:uniform(tuple_size(Prefixes)), Prefixes),
    <<P/binary, (hex(1))/binary>>.

%% N random 64-bit words as upper-case hex, 16 characters each (what
%% binary:encode_hex(crypto:strong_rand_bytes(8 * N)) looks like, but fast
%% and drawn from the seeded rand state).
hex(0) -> <<>>;
hex(N) ->
    <<_, H:16/binary>> = integer_to_binary((1 bsl 64) + rand:uniform(1 bsl 64) - 1, 16),
    <<H/binary, (hex(N - 1))/binary>>.

metadata(N) ->
    {Client, Versions} = pick({{<<"claude-desktop">>, {<<"0.9.2">>, <<"0.10.1">>}},
                               {<<"cursor">>, {<<"1.2.4">>, <<"1.3.0">>}},
                               {<<"vscode-copilot">>, {<<"1.101.0">>, <<"1.102.2">>}},
                               {<<"mcp-inspector">>, {<<"0.14.0">>, <<"0.16.1">>}},
                               {<<"erlmcp-cli">>, {<<"2.1.0">>, <<"2.2.0">>}}}),
    Version = pick(Versions),
    #{<<"client">> => #{<<"name">> => Client, <<"version">> => Version},
      <<"user_agent">> => <<Client/binary, "/", Version/binary, " (",
                            (pick({<<"Linux x86_64">>, <<"Darwin arm64">>,
                                   <<"Windows NT 10.0">>}))/binary, ")">>,
      <<"protocol_version">> => pick({<<"2024-11-05">>, <<"2025-03-26">>, <<"2025-06-18">>}),
      <<"capabilities">> => capabilities(),
      <<"transport">> => pick({<<"stdio">>, <<"http">>, <<"sse">>, <<"websocket">>}),
      <<"remote_addr">> => <<"10.", (integer_to_binary(rand:uniform(255) - 1))/binary, ".",
                             (integer_to_binary(rand:uniform(255) - 1))/binary, ".",
                             (integer_to_binary(rand:uniform(254)))/binary>>,
      <<"request_count">> => rand:uniform(5000) - 1,
      <<"seq">> => N}.

pick(T) -> element(rand:uniform(tuple_size(T)), T).

%% Clients announce different subsets of the MCP client capabilities.
capabilities() ->
    All = [{<<"roots">>, #{<<"listChanged">> => true}},
           {<<"sampling">>, #{}},
           {<<"elicitation">>, #{}},
           {<<"experimental">>, #{<<"streaming">> => #{<<"enabled">> => true}}}],
    maps:from_list([C || C <- All, rand:uniform(2) =:= 1]).

pad(0) -> <<>>;
pad(Len) ->
    Text = <<"session notes: resumed after reconnect; tools listed; sampling enabled. ">>,
    Copies = Len div byte_size(Text) + 1,
    binary:part(binary:copy(Text, Copies), 0, Len).
