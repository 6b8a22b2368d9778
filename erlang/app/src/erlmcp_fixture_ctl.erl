%% @doc Helper commands for scripts/devcluster.sh, run on a short-lived
%% hidden node: `erl -hidden ... -eval 'erlmcp_fixture_ctl:main()' -extra CMD ARGS'.
%% Each command prints what it did and halts (0 on success, 1 otherwise).
%%
%%   wait TimeoutMs app|ping Node...   every node answers ping (and, with
%%                                     `app', runs erlmcp_fixture)
%%   mnesia_init Node...               disc schema on all nodes (unless one
%%                                     exists), then start erlmcp_fixture on each
%%   start_app Node...                 start erlmcp_fixture on each
%%   status Node...                    one line per node
%%   stop Node...                      init:stop() on every node that answers
%%   seed Node Store Count Seed        erlmcp_fixture_seed:seed/4 there, timed
-module(erlmcp_fixture_ctl).

-export([main/0, main/1]).

main() ->
    main(init:get_plain_arguments()).

main(Args) ->
    Code = try run(Args) of
               ok -> 0;
               {error, Fmt, FmtArgs} -> io:format(standard_error, Fmt ++ "~n", FmtArgs), 1
           catch
               Class:Reason:Stack ->
                   io:format(standard_error, "~p:~p~n~p~n", [Class, Reason, Stack]), 1
           end,
    halt(Code).

run(["wait", Timeout, What | Nodes]) ->
    Deadline = now_ms() + list_to_integer(Timeout),
    wait([list_to_atom(N) || N <- Nodes], What =:= "app", Deadline);
run(["mnesia_init" | Names]) ->
    Nodes = [list_to_atom(N) || N <- Names],
    _ = rpc:multicall(Nodes, application, stop, [mnesia], 30000),
    case rpc:call(hd(Nodes), mnesia, create_schema, [Nodes], 60000) of
        ok -> io:format("mnesia schema created on ~p~n", [Nodes]);
        {error, {_, {already_exists, _}}} -> io:format("mnesia schema already there~n");
        Other -> throw_error("mnesia:create_schema: ~p", [Other])
    end,
    %% Mnesia must run everywhere before any node creates the table with
    %% copies on all of them (else {not_active, ...}).
    {Started, Bad0} = rpc:multicall(Nodes, mnesia, start, [], 60000),
    case [R || R <- Started, R =/= ok] of
        [] when Bad0 =:= [] -> ok;
        BadStart -> throw_error("mnesia:start: ~p, unreachable: ~p", [BadStart, Bad0])
    end,
    ok = wait_db_nodes(Nodes, now_ms() + 30000),
    {Res, Bad} = rpc:multicall(Nodes, application, ensure_all_started, [erlmcp_fixture], 120000),
    Failed = [R || R <- Res, element(1, R) =/= ok],
    case {Failed, Bad} of
        {[], []} -> ok;
        _ -> {error, "starting erlmcp_fixture failed: ~p, unreachable: ~p", [Failed, Bad]}
    end;
run(["start_app" | Names]) ->
    {Res, Bad} = rpc:multicall([list_to_atom(N) || N <- Names], application,
                               ensure_all_started, [erlmcp_fixture], 120000),
    case {[R || R <- Res, element(1, R) =/= ok], Bad} of
        {[], []} -> ok;
        {Failed, _} -> {error, "starting erlmcp_fixture failed: ~p, unreachable: ~p", [Failed, Bad]}
    end;
run(["status" | Names]) ->
    lists:foreach(fun(N) -> io:format("~s~n", [status(list_to_atom(N))]) end, Names);
run(["stop" | Names]) ->
    lists:foreach(
      fun(Name) ->
              N = list_to_atom(Name),
              case net_adm:ping(N) of
                  pong -> rpc:cast(N, init, stop, []), io:format("~s: init:stop() sent~n", [N]);
                  pang -> io:format("~s: not answering~n", [N])
              end
      end, Names);
run(["seed", Name, Store, Count, Seed]) ->
    Node = list_to_atom(Name),
    N = list_to_integer(Count),
    T0 = now_ms(),
    case rpc:call(Node, erlmcp_fixture_seed, seed,
                  [list_to_existing_atom(Store), #{}, N, list_to_integer(Seed)], infinity) of
        {ok, Written} ->
            Ms = max(1, now_ms() - T0),
            io:format("seeded ~b sessions into ~s on ~s in ~.2f s (~b rows/s)~n",
                      [Written, Store, Node, Ms / 1000, Written * 1000 div Ms]);
        Other ->
            {error, "seed failed on ~s: ~p", [Node, Other]}
    end;
run(Args) ->
    {error, "unknown command: ~p", [Args]}.

wait(Nodes, App, Deadline) ->
    case [N || N <- Nodes, not ready(N, App)] of
        [] ->
            ok;
        Waiting ->
            case now_ms() > Deadline of
                true -> {error, "not ready in time: ~p", [Waiting]};
                false -> timer:sleep(200), wait(Nodes, App, Deadline)
            end
    end.

%% Every node sees every other one as a running Mnesia node.
wait_db_nodes(Nodes, Deadline) ->
    Want = lists:sort(Nodes),
    Views = [catch lists:sort(rpc:call(N, mnesia, system_info, [running_db_nodes], 5000))
             || N <- Nodes],
    case lists:all(fun(V) -> V =:= Want end, Views) of
        true -> ok;
        false ->
            case now_ms() > Deadline of
                true -> throw_error("mnesia running_db_nodes disagree: ~p", [Views]);
                false -> timer:sleep(100), wait_db_nodes(Nodes, Deadline)
            end
    end.

ready(N, App) ->
    net_adm:ping(N) =:= pong andalso (not App orelse running(N)).

running(N) ->
    case rpc:call(N, application, which_applications, [], 5000) of
        Apps when is_list(Apps) -> lists:keymember(erlmcp_fixture, 1, Apps);
        _ -> false
    end.

status(N) ->
    case net_adm:ping(N) of
        pang ->
            io_lib:format("~s down", [N]);
        pong ->
            Tables = counts(N),
            case rpc:call(N, erlmcp_session_store, info, [], 5000) of
                #{backend := B} ->
                    io_lib:format("~s up backend=~s~s", [N, B, Tables]);
                _ ->
                    io_lib:format("~s up (erlmcp_fixture not running)~s", [N, Tables])
            end
    end.

%% Sizes of the default tables that exist on the node.
counts(N) ->
    Sizes = [{"ets", rpc:call(N, ets, info, [erlmcp_sessions_ets, size], 5000)},
             {"dets", rpc:call(N, dets, info, [erlmcp_sessions_dets, size], 5000)},
             {"mnesia", case rpc:call(N, mnesia, system_info, [is_running], 5000) of
                            yes -> rpc:call(N, mnesia, table_info, [erlmcp_session, size], 5000);
                            _ -> none
                        end}],
    [io_lib:format(" ~s=~b", [K, V]) || {K, V} <- Sizes, is_integer(V)].

throw_error(Fmt, Args) -> erlang:error({failed, lists:flatten(io_lib:format(Fmt, Args))}).

now_ms() -> erlang:monotonic_time(millisecond).
